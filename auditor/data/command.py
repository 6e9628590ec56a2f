"""`auditor data synth OUT`: train/val shards and a SentencePiece tokenizer from local text.

Thin typer layer; imports only typer and the standard library at module level (the library
module, and sentencepiece with it, load when the command runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from auditor.report import OutputFormat

data_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Synthetic datasets in the challenge's shard format, for tests and GPU dry runs.",
)


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (created; old shards in it are replaced).")],
    vocab: Annotated[int, typer.Option("--vocab", help="SentencePiece BPE vocabulary size.")] = 1024,
    train_tokens: Annotated[int, typer.Option("--train-tokens", help="Tokens in the training shard.")] = 1_000_000,
    val_tokens: Annotated[int, typer.Option("--val-tokens", help="Tokens in the validation shard.")] = 100_000,
    seed: Annotated[int, typer.Option("--seed", help="Shuffles which local documents are used.")] = 0,
    output_format: Annotated[OutputFormat, typer.Option("-f", "--format", help="text or json.")] = OutputFormat.text,
) -> None:
    """Train a tokenizer on local text (no downloads) and write fineweb_{train,val}_000000.bin."""
    from auditor.data.synth import SynthError, synthesize

    try:
        result = synthesize(out, vocab_size=vocab, train_tokens=train_tokens, val_tokens=val_tokens, seed=seed)
    except SynthError as exc:
        typer.echo(f"auditor data synth: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"auditor data synth: cannot write {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    typer.echo(
        f"{result.out_dir}: train {result.train_tokens:,} tokens ({result.train_docs} docs"
        f"{f', cycled {result.train_repeats}x' if result.train_repeats > 1 else ''}), "
        f"val {result.val_tokens:,} tokens ({result.val_docs} docs), vocab {result.vocab_size}, "
        f"{result.seconds:.1f}s"
    )
    typer.echo(f"DATA_PATH={result.out_dir} TOKENIZER_PATH={result.tokenizer_path} VOCAB_SIZE={result.vocab_size}")
