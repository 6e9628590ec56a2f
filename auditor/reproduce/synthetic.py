"""A tiny synthetic dataset in the challenge's layout, for tests and the CPU dry runs.

Random documents over a small random lexicon, a SentencePiece BPE tokenizer trained on
them, and shards `fineweb_train_*.bin` / `fineweb_val_*.bin` (each document starts with
BOS). `leak_documents` copies that many validation documents into the training shards,
the Issue #2127 failure the fingerprint check must catch.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from auditor.reproduce.dataset import write_shard


def _documents(rng: np.random.Generator, count: int, lexicon: list[str]) -> list[str]:
    lengths = rng.integers(40, 160, size=count)
    return [" ".join(lexicon[i] for i in rng.integers(0, len(lexicon), size=n)) for n in lengths]


def write_tiny_dataset(
    out: Path | str,
    vocab_size: int = 128,
    train_documents: int = 1200,
    val_documents: int = 150,
    train_shards: int = 2,
    leak_documents: int = 0,
    seed: int = 0,
) -> tuple[Path, Path]:
    """(dataset folder, tokenizer .model) under `out`: datasets/tiny/ and tokenizers/tiny.model."""
    import sentencepiece as spm

    out = Path(out)
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lexicon = ["".join(rng.choice(letters, size=int(n))) for n in rng.integers(2, 9, size=400)]
    val_docs = _documents(rng, val_documents, lexicon)
    train_docs = _documents(rng, train_documents, lexicon)

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train_docs[:400]), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, num_threads=1, minloglevel=2, bos_id=1, eos_id=2, unk_id=0,
    )
    tokenizer_path = out / "tokenizers" / "tiny.model"
    tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer_path.write_bytes(model.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())

    def encode(docs: list[str]) -> np.ndarray:
        ids: list[int] = []
        for doc in docs:
            ids.append(processor.bos_id())
            ids.extend(processor.encode(doc))
        return np.array(ids, dtype=np.uint16)

    data_dir = out / "datasets" / "tiny"
    data_dir.mkdir(parents=True, exist_ok=True)
    write_shard(data_dir / "fineweb_val_000000.bin", encode(val_docs))
    if leak_documents:
        # Spread the copied documents through the training stream.
        for index, doc in enumerate(val_docs[:leak_documents]):
            train_docs.insert((index * 7919) % len(train_docs), doc)
    per_shard = -(-len(train_docs) // train_shards)
    for shard in range(train_shards):
        docs = train_docs[shard * per_shard:(shard + 1) * per_shard]
        write_shard(data_dir / f"fineweb_train_{shard:06d}.bin", encode(docs))
    return data_dir, tokenizer_path
