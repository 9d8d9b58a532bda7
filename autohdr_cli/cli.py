"""The ``autohdr`` command line: each command parses its options, calls library code, picks the exit code.

Exit codes: 0 everything worked, 1 some file failed (the rest were done), 2 usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__

app = typer.Typer(
    name="autohdr",
    help="Learn a photo editor's look from before/after pairs and apply it to folders of photos.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _usage_error(message: str) -> typer.Exit:
    """Print a one-line usage error to stderr and return the exit to raise."""
    typer.echo(f"autohdr: error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"autohdr {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Learn a photo editor's look from before/after pairs and apply it to folders of photos."""


# ---- enhance -------------------------------------------------------------------------------------


def _pick_model_file(lut: Optional[Path], weights: Optional[Path], model: Optional[str]) -> Path:
    """The one model file an enhance run uses, from --lut, --weights, --model or the shipped default."""
    from .checkpoint import default_weights_path
    from .models import MODELS

    given = [name for name, value in (("--lut", lut), ("--weights", weights), ("--model", model)) if value]
    if len(given) > 1:
        raise _usage_error(f"give only one of --lut, --weights and --model (got {' and '.join(given)})")
    if lut:
        return lut
    if weights:
        return weights
    if model:
        if model not in MODELS:
            raise _usage_error(f"--model {model}: unknown model (known: {', '.join(sorted(MODELS))})")
        path = default_weights_path(model)
        if not path.exists():
            raise _usage_error(f"--model {model}: no default weights shipped for it ({path} is missing)")
        return path
    path = default_weights_path("lut")
    if not path.exists():
        raise _usage_error("no model given: use --lut FILE.cube or --weights FILE.safetensors")
    return path


@app.command()
def enhance(
    input: Annotated[Path, typer.Argument(help="A photo, or a folder of photos (searched recursively).")],
    output: Annotated[Path, typer.Argument(help="Folder for the results; the input tree is mirrored.")],
    lut: Annotated[Optional[Path], typer.Option("--lut", help="Apply this .cube 3D LUT.")] = None,
    weights: Annotated[
        Optional[Path], typer.Option("--weights", "-w", help="Use this autohdr .safetensors checkpoint.")
    ] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", "-m", help="Use the shipped default weights of this model.")
    ] = None,
    strength: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Blend with the input: 0 = unchanged, 1 = full effect.")
    ] = 1.0,
    output_format: Annotated[
        str, typer.Option("--format", help="Output format: same, jpg, png, tiff or webp.")
    ] = "same",
    suffix: Annotated[str, typer.Option(help="Text added to each output file's stem, e.g. _hdr.")] = "",
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality (JPEG is 4:4:4).")] = 95,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (else skipped).")] = False,
    strip_metadata: Annotated[
        bool, typer.Option("--strip-metadata", help="Drop EXIF and ICC profile from the outputs.")
    ] = False,
    workers: Annotated[
        int, typer.Option(min=0, help="Decode/encode threads (0 = one per CPU core).")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, or cuda[:N].")] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be done, write nothing.")] = False,
    shard: Annotated[
        Optional[str], typer.Option(help="K/N: process only shard K (1..N) of the folder, for job arrays.")
    ] = None,
    report: Annotated[
        Optional[Path], typer.Option(help="Write one record per photo to this .jsonl or .csv file.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary line.")] = False,
) -> None:
    """Enhance a photo or a folder of photos with a look (.cube LUT or learned weights).

    Exit code 0 when every photo worked, 1 when some failed (each gets one line on stderr and the
    others are still done), 2 for a usage error. Existing outputs are skipped unless --overwrite.
    """
    import sys

    from .checkpoint import CheckpointError, load_model
    from .cube import CubeError
    from .pipeline import OUTPUT_FORMATS, EnhanceOptions, UsageError, enhance_folder, parse_shard
    from .progress import ProgressReporter

    if output_format not in OUTPUT_FORMATS:
        raise _usage_error(f"--format {output_format}: expected one of {', '.join(OUTPUT_FORMATS)}")
    try:
        shard_value = parse_shard(shard) if shard else None
    except ValueError as e:
        raise _usage_error(str(e)) from None
    model_file = _pick_model_file(lut, weights, model)
    try:
        enhancer_model = load_model(model_file)
    except (CheckpointError, CubeError) as e:
        raise _usage_error(str(e)) from None
    options = EnhanceOptions(
        output_format=output_format,
        suffix=suffix,
        quality=quality,
        overwrite=overwrite,
        strip_metadata=strip_metadata,
        workers=workers,
        device=device,
        strength=strength,
        dry_run=dry_run,
        shard=shard_value,
        report=report,
    )
    progress = ProgressReporter(enabled=not quiet and sys.stderr.isatty(), dry_run=dry_run)
    try:
        with progress:
            summary = enhance_folder(
                enhancer_model, input, output, options, on_result=progress.result, on_start=progress.start
            )
    except UsageError as e:
        raise _usage_error(str(e)) from None
    if not quiet:
        typer.echo(summary.line(), err=True)
    if summary.interrupted:
        raise typer.Exit(130)
    raise typer.Exit(EXIT_FAILED if summary.failed else EXIT_OK)


# ---- train ---------------------------------------------------------------------------------------

# ---- evaluate ------------------------------------------------------------------------------------

# ---- export / info -------------------------------------------------------------------------------
