"""Model resolution: offline defaults, substitution of Hub names, the bundled files."""

from archivesrag.models import (FULL_MODELS, bundled_embedder_path, bundled_gguf_path, get_device, load_embedder,
                                resolve_embedder)


def test_bundled_files_exist():
    assert (bundled_embedder_path() / "model.safetensors").exists()
    gguf = bundled_gguf_path()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000


def test_offline_substitutes_hub_names_and_says_so(capsys):
    assert resolve_embedder("BAAI/bge-base-en-v1.5", offline=True) == str(bundled_embedder_path())
    assert "instead of BAAI/bge-base-en-v1.5" in capsys.readouterr().out
    assert resolve_embedder(None, offline=True) == str(bundled_embedder_path())


def test_online_keeps_the_seed_defaults(tmp_path):
    assert resolve_embedder(None, offline=False) == FULL_MODELS["base_embedder"] == "mixedbread-ai/mxbai-embed-large-v1"
    assert resolve_embedder("BAAI/bge-base-en-v1.5", offline=False) == "BAAI/bge-base-en-v1.5"
    assert resolve_embedder(str(tmp_path), offline=False) == str(tmp_path)  # local folders pass through


def test_embedder_loads_and_embeds():
    model = load_embedder()
    e = model.encode(["retention schedule", "disposition authority"], normalize_embeddings=True)
    assert e.shape == (2, 384)
    assert get_device() in {"cpu", "cuda", "mps"}
