"""Model resolution: offline defaults, substitution of the seed's names only, errors that name the model, sizing."""

import pytest

from archivesrag.core import InputError
from archivesrag.models import (FULL_MODELS, SMALL_GPU_RAG_LLM, bundled_embedder_path, bundled_gguf_path, full_recipe,
                                get_device, hub_name, import_faiss, load_embedder, rag_model_for_gpu, recipe,
                                resolve_embedder)

pytestmark = pytest.mark.fast  # resolution and sizing; one MiniLM load


def test_bundled_files_exist():
    assert (bundled_embedder_path() / "model.safetensors").exists()
    gguf = bundled_gguf_path()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000


def test_offline_substitutes_the_seeds_names_and_says_so(capsys):
    for name in ("BAAI/bge-base-en-v1.5", "mixedbread-ai/mxbai-embed-large-v1"):
        assert resolve_embedder(name, offline=True) == str(bundled_embedder_path())
        assert f"instead of {name}" in capsys.readouterr().out
    assert resolve_embedder(None, offline=True) == str(bundled_embedder_path())
    assert resolve_embedder("sentence-transformers/all-MiniLM-L6-v2") == str(bundled_embedder_path())


@pytest.mark.parametrize("name", ["someone/no-such-model", "bge-bsae"])
def test_offline_unknown_hub_name_is_an_error_naming_it(name):
    with pytest.raises(InputError, match=f"^{name}: not a local folder, not in the Hugging Face cache"):
        resolve_embedder(name, offline=True)


@pytest.mark.parametrize("name", ["/abs/typo", "./typo", "../models/typo", "~/typo-model", "runs/demo/model"])
def test_mistyped_local_path_is_an_error_naming_it(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for offline in (True, False):
        with pytest.raises(InputError, match=f"^{name}: no such model folder"):
            resolve_embedder(name, offline=offline)


def test_local_folders_come_back_absolute(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    for offline in (True, False):
        assert resolve_embedder("model", offline=offline) == str(tmp_path / "model")
        assert resolve_embedder("./model/", offline=offline) == str(tmp_path / "model")


def test_online_keeps_the_seed_defaults():
    # the Hub is unreachable here, so a name is passed through unchecked (the loader reports a real problem)
    assert resolve_embedder(None, offline=False) == FULL_MODELS["base_embedder"] == "mixedbread-ai/mxbai-embed-large-v1"
    assert resolve_embedder(None, offline=False, role="miner") == "BAAI/bge-base-en-v1.5"
    assert resolve_embedder("BAAI/bge-base-en-v1.5", offline=False) == "BAAI/bge-base-en-v1.5"


def test_rag_model_sized_to_the_gpu():
    assert rag_model_for_gpu(14.6) == SMALL_GPU_RAG_LLM == "meta-llama/Llama-3.2-3B-Instruct"  # T4
    assert rag_model_for_gpu(15.8) == SMALL_GPU_RAG_LLM                                        # V100 16 GB
    for gib in (22.1, 23.6, 39.4, 79.1):                                                        # A10G, 4090, A100, H100
        assert rag_model_for_gpu(gib) == FULL_MODELS["rag_llm"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    if get_device() != "cuda": assert rag_model_for_gpu() is None and rag_model_for_gpu(0) is None


def test_recipe_per_role_on_this_machine():
    assert set(FULL_MODELS) == {"query_llm", "miner", "base_embedder", "rag_llm"}
    if full_recipe():
        assert recipe("miner") == FULL_MODELS["miner"] and recipe("rag_llm") == rag_model_for_gpu()
    else:  # offline (as under the tests) or no CUDA: the bundled models
        assert recipe("miner") == recipe("base_embedder") == str(bundled_embedder_path())
        assert recipe("query_llm") == recipe("rag_llm") == str(bundled_gguf_path())
    with pytest.raises(KeyError, match="roles are"):
        recipe("reranker")


def test_hub_name_for_model_cards(tmp_path):
    assert hub_name(bundled_embedder_path()) == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_name("BAAI/bge-base-en-v1.5") == "BAAI/bge-base-en-v1.5"
    assert hub_name(tmp_path) == str(tmp_path)


def test_faiss_imports():
    faiss = import_faiss()
    assert hasattr(faiss, "IndexFlatIP")


def test_embedder_loads_and_embeds():
    model = load_embedder()
    e = model.encode(["retention schedule", "disposition authority"], normalize_embeddings=True)
    assert e.shape == (2, 384)
    assert get_device() in {"cpu", "cuda", "mps"}


def test_a_bare_model_folder_gets_a_note_and_a_sentence_transformers_folder_none(tmp_path):
    "A folder without modules.json is pooled by mean by sentence-transformers, said only at INFO level: we say it."
    from archivesrag.models import bare_folder_note
    (tmp_path / "config.json").write_text("{}")
    assert "no modules.json" in bare_folder_note(str(tmp_path)) and "pools it by mean" in bare_folder_note(str(tmp_path))
    assert bare_folder_note(str(bundled_embedder_path())) is None
    assert bare_folder_note("sentence-transformers/all-MiniLM-L6-v2") is None  # a Hub id, not a folder
