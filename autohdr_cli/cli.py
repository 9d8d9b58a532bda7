"""The ``autohdr`` command line: each command parses its options, calls library code, picks the exit code.

Exit codes: 0 everything worked, 1 some file failed (the rest were done), 2 usage error,
3 (enhance) no photos in the input, 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .probe import DEFAULT_MAX_MEGAPIXELS


#: Click's UsageError, whichever Click Typer uses (its own bundled copy from 0.26, the click package before).
_CLICK_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _OneLineUsageErrors(TyperGroup):
    """Typer's own usage errors (unknown option, missing argument, bad value) as one ``autohdr: error:``
    line and exit 2, like ours, instead of a usage box."""

    def make_context(self, *args, **kwargs):
        """Parse the top level (global options, command name)."""
        try:
            return super().make_context(*args, **kwargs)
        except _CLICK_USAGE_ERROR as e:
            raise _as_one_line(e) from None

    def invoke(self, ctx):
        """Parse and run a command."""
        try:
            return super().invoke(ctx)
        except _CLICK_USAGE_ERROR as e:
            raise _as_one_line(e) from None


def _as_one_line(error: Exception) -> BaseException:
    if getattr(error, "exit_code", None) != 2 or type(error).__name__ == "NoArgsIsHelpError":
        return error  # not a usage error, or `autohdr` alone: the help it prints is the answer
    context = getattr(error, "ctx", None)
    command = f" (see {context.command_path} --help)" if context is not None else ""
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    typer.echo(f"autohdr: error: {message}{command}", err=True)
    return typer.Exit(2)


app = typer.Typer(
    cls=_OneLineUsageErrors,
    name="autohdr",
    help="Learn a photo editor's look from before/after pairs and apply it to folders of photos.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_PHOTOS = 0, 1, 2, 3


def _usage_error(message: str) -> typer.Exit:
    """Print a one-line usage error to stderr and return the exit to raise."""
    typer.echo(f"autohdr: error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


def _base_option(raw: str | None) -> str | Path | None:
    """``--base`` (and ``--teacher``) as training takes it: the keywords ``auto`` and ``none`` as they are, else a file
    (``./auto`` is a file of that name)."""
    return raw if raw in (None, "auto", "none") else Path(raw)


DEVICE_HELP = "Where models run: auto (the GPU if there is one), cpu, cuda or cuda:N."


def _device(name: str):
    """``--device``, checked the same way in every command (:mod:`autohdr_cli.devices`); loads torch."""
    from .devices import DeviceError, resolve_device

    try:
        return resolve_device(name)
    except DeviceError as e:
        raise _usage_error(str(e)) from None


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


#: ``enhance`` options that set a model's config field at load time, by field (``runtime_settings``).
SETTING_FLAGS = {
    "pretrained": "--pretrained", "inference_steps": "--steps", "image_guidance": "--image-guidance",
    "text_guidance": "--text-guidance", "max_side": "--max-side", "lut_size": "--lut-size",
}


def _setting_owners(given: dict[str, str]) -> str:
    """The models that take the given settings, e.g. 'ip2p' or 'localtone'."""
    from .models import MODELS

    owners = sorted(name for name, cls in MODELS.items() if set(given) & set(getattr(cls, "runtime_settings", ())))
    return " or ".join(owners) or "no"


def _pick_model_file(lut: Optional[Path], weights: Optional[Path], model: Optional[str]) -> Path:
    """The one model file an enhance run uses, from --lut, --weights, --model or the shipped default."""
    given = [name for name, value in (("--lut", lut), ("--weights", weights), ("--model", model)) if value]
    if len(given) > 1:
        raise _usage_error(f"give only one of --lut, --weights and --model (got {' and '.join(given)})")
    if lut:
        return lut
    if weights:
        return weights
    from .checkpoint import default_weights_path
    from .models import MODELS

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
    style: Annotated[
        Optional[str],
        typer.Option(help="For models holding several looks (nilut): a look's name or index, or weights like 0.3,0.7."),
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="Output format: same, jpg, png, tiff or webp.")
    ] = "same",
    suffix: Annotated[str, typer.Option(help="Text added to each output file's stem, e.g. _hdr.")] = "",
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality (JPEG is 4:4:4).")] = 95,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs (else skipped if made the same way).")
    ] = False,
    strip_metadata: Annotated[
        bool, typer.Option("--strip-metadata", help="Drop EXIF, ICC profile, XMP and IPTC from the outputs.")
    ] = False,
    max_megapixels: Annotated[
        float,
        typer.Option(
            "--max-megapixels", min=0.001, help="Refuse photos whose header declares more pixels (before decoding)."
        ),
    ] = DEFAULT_MAX_MEGAPIXELS,
    workers: Annotated[
        int, typer.Option(min=0, help="Decode/encode threads (0 = one per CPU core).")
    ] = 0,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be done, write nothing.")] = False,
    shard: Annotated[
        Optional[str], typer.Option(help="K/N: process only shard K (1..N) of the folder, for job arrays.")
    ] = None,
    report: Annotated[
        Optional[Path], typer.Option(help="Write one record per photo to this .jsonl or .csv file.")
    ] = None,
    tile: Annotated[
        int, typer.Option("--tile", min=16, help="Convolutional models (nafnet, diffir): tile size in pixels.")
    ] = 512,
    tile_overlap: Annotated[
        int, typer.Option("--tile-overlap", min=0, help="Convolutional models: overlap of neighbouring tiles, pixels.")
    ] = 32,
    seed: Annotated[
        int, typer.Option(help="diffir, ip2p: seed of the diffusion's starting noise (same seed, same result).")
    ] = 0,
    precision: Annotated[
        str, typer.Option(help="CUDA only: fp32 (exact), tf32, bf16 or fp16 for the model's network.")
    ] = "fp32",
    pretrained: Annotated[
        Optional[str], typer.Option(help="ip2p: the base model's diffusers folder or hub id (default: the one it was trained on).")
    ] = None,
    sampling_steps: Annotated[
        Optional[int], typer.Option("--steps", min=1, help="ip2p: diffusion sampling steps (default: the checkpoint's, 20).")
    ] = None,
    image_guidance: Annotated[
        Optional[float], typer.Option("--image-guidance", min=0.0, help="ip2p: how closely to follow the photo (default 1.5).")
    ] = None,
    text_guidance: Annotated[
        Optional[float], typer.Option("--text-guidance", min=0.0, help="ip2p: how strongly to follow the instruction (default 7.5).")
    ] = None,
    max_side: Annotated[
        Optional[int], typer.Option("--max-side", min=64, help="ip2p: long side of the copy the diffusion edits (default 512).")
    ] = None,
    lut_size: Annotated[
        Optional[int],
        typer.Option("--lut-size", min=0, max=65, help="localtone: carry its edit of a small copy to the photo with a LUT of this many points per axis, fitted per photo (about 5x faster on large photos; 0 = every pixel through the model)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary line.")] = False,
) -> None:
    """Enhance a photo or a folder of photos with a look (.cube LUT or learned weights).

    Exit code 0 when every photo worked, 1 when some failed or the --report could not be written
    (each gets one line on stderr and the others are still done), 2 for a usage error (including
    existing outputs made with another look or options), 3 when the input holds no photos, 130 when
    interrupted. Existing outputs made the same way are skipped unless --overwrite.
    """
    import sys

    from .cube import CubeError, read_cube
    from .enhancer import PRECISIONS
    from .outputs import check_suffix, display
    from .pipeline import OUTPUT_FORMATS, EnhanceOptions, UsageError, enhance_folder, parse_shard
    from .progress import ProgressReporter

    if output_format not in OUTPUT_FORMATS:
        raise _usage_error(f"--format {output_format}: expected one of {', '.join(OUTPUT_FORMATS)}")
    if precision not in PRECISIONS:
        raise _usage_error(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if tile_overlap >= tile:
        raise _usage_error(f"--tile-overlap {tile_overlap} must be smaller than --tile {tile}")
    from .devices import DeviceError, check_device_name

    try:
        check_device_name(device)  # the name only: a .cube run does not load torch
    except DeviceError as e:
        raise _usage_error(str(e)) from None
    try:
        check_suffix(suffix)
    except UsageError as e:
        raise _usage_error(str(e)) from None
    try:
        shard_value = parse_shard(shard) if shard is not None else None
    except ValueError as e:
        raise _usage_error(str(e)) from None
    model_file = _pick_model_file(lut, weights, model)
    # Settings some models take at load time, by config field (ip2p's sampling, localtone's LUT carry);
    # given for another model they are refused, not ignored.
    settings = {
        "pretrained": pretrained, "inference_steps": sampling_steps, "image_guidance": image_guidance,
        "text_guidance": text_guidance, "max_side": max_side, "lut_size": lut_size,
    }
    given = {field: flag for field, flag in SETTING_FLAGS.items() if settings[field] is not None}
    if model_file.suffix.lower() == ".cube":
        # A .cube look runs on numpy alone: torch is never imported (two seconds of start-up saved).
        if style is not None:
            raise _usage_error("--style is for models that hold several looks (nilut), not a .cube LUT")
        if given:
            raise _usage_error(f"{' '.join(given.values())}: for {_setting_owners(given)} checkpoints only, not a .cube LUT")
        try:
            enhancer_model = read_cube(model_file)
        except CubeError as e:
            raise _usage_error(str(e)) from None
    else:
        from .checkpoint import CheckpointError, load_model, read_header
        from .models import MODELS

        try:
            if given:
                name = read_header(model_file).metadata.get("autohdr.model") or ""
                refused = [flag for field, flag in given.items() if field not in getattr(MODELS.get(name), "runtime_settings", ())]
                if refused:
                    raise _usage_error(
                        f"{' '.join(refused)}: for {_setting_owners(given)} checkpoints only; {model_file} is a {name or 'other'} model"
                    )
            enhancer_model = load_model(model_file, settings=settings)
        except (CheckpointError, CubeError) as e:
            raise _usage_error(str(e)) from None
    if style is not None:
        from .models.nilut import set_style_from_text

        try:
            set_style_from_text(enhancer_model, style)
        except ValueError as e:
            raise _usage_error(str(e)) from None
    if hasattr(enhancer_model, "sampling_seed"):
        enhancer_model.sampling_seed = seed
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
        tile=tile,
        tile_overlap=tile_overlap,
        precision=precision,
        max_megapixels=max_megapixels,
        model_file=model_file,
        style=style,
        seed=seed,
    )
    progress = ProgressReporter(enabled=not quiet and sys.stderr.isatty(), dry_run=dry_run)
    try:
        with progress:
            summary = enhance_folder(
                enhancer_model,
                input,
                output,
                options,
                on_result=progress.result,
                on_start=progress.start if progress.enabled else None,
            )
    except UsageError as e:
        raise _usage_error(str(e)) from None
    if not quiet:
        typer.echo(summary.line(), err=True)
        for line in summary.notes():
            typer.echo(f"autohdr: note: {line}", err=True)
    if summary.report_error:
        typer.echo(f"autohdr: error: {summary.report_error} (the batch went on without it)", err=True)
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.no_photos:
        typer.echo(f"autohdr: warning: no JPEG, PNG, TIFF or WebP photos in {display(input)}", err=True)
        raise typer.Exit(EXIT_NO_PHOTOS)
    problems = summary.failed or summary.report_error or summary.listing.unlisted
    raise typer.Exit(EXIT_FAILED if problems else EXIT_OK)


# ---- train ---------------------------------------------------------------------------------------


@app.command()
def train(
    pairs: Annotated[
        list[Path],
        typer.Argument(
            help="Pairs folder(s) with source/target (or input/output, ...) sub-folders; one look each. "
            "Or BEFORE AFTER: one pair as two photo files (a one-shot look, --model oneshot).",
            metavar="PAIRS",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (.safetensors).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Backend to train: lut, localtone, nilut, nafnet, diffir or oneshot (one example pair); nafnet-base, diffir-small... for a preset.")] = "lut",
    config: Annotated[
        Optional[str], typer.Option(help='Model settings as JSON, e.g. \'{"lut_size": 17, "num_basis": 5}\'.')
    ] = None,
    steps: Annotated[
        Optional[int],
        typer.Option(min=1, help="Optimizer steps (default 2000, or as many as --time-limit allows); the "
                     "learning-rate schedule ends at whichever of the two comes first."),
    ] = None,
    time_limit: Annotated[
        Optional[str], typer.Option("--time-limit", help="Train for this long, e.g. 90s, 10m, 1h30m: warm-up and "
                                    "cosine decay span the time, so the run ends annealed.")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Crops per step (per process under torchrun).")] = 8,
    lr: Annotated[
        Optional[float], typer.Option(min=0.0, help="Peak learning rate (AdamW, cosine schedule); default 1e-3, ip2p 1e-5.")
    ] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0, help="AdamW weight decay.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the validation split, the initial weights and the batches.")] = 0,
    split_seed: Annotated[
        Optional[int],
        typer.Option("--split-seed", help="Seed of the validation split alone (default: --seed), to compare "
                     "training seeds on the same held-out pairs."),
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    resume: Annotated[
        Optional[Path], typer.Option(help="Continue this checkpoint's run exactly (needs its FILE.state).")
    ] = None,
    init: Annotated[
        Optional[str],
        typer.Option("--init", help="Fine-tune from this checkpoint of the same model (its config, under "
                     "--config; a --config that changes shapes starts cold with a warning). Default: the model's "
                     "shipped pretrained start (nafnet); 'none' starts from random weights."),
    ] = None,
    val_split: Annotated[float, typer.Option("--val-split", help="Fraction of pairs held out for validation.")] = 0.2,
    val_list: Annotated[
        Optional[Path],
        typer.Option("--val-list", help="Hold out exactly the pairs this file names (one stem or file name a "
                     "line), e.g. every photo of one source, instead of a random --val-split."),
    ] = None,
    val_every: Annotated[int, typer.Option("--val-every", min=1, help="Validate every N steps.")] = 100,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", min=1, help="Write the checkpoint every N steps (and every 2 minutes).")
    ] = 250,
    crop: Annotated[int, typer.Option(min=8, help="Training crop size in pixels.")] = 256,
    train_size: Annotated[
        Optional[int], typer.Option("--train-size", min=8, help="Pairs are decoded once at this long side "
                                    "(default: nafnet 1536, others 512; smaller pairs stay at their own size).")
    ] = None,
    crops: Annotated[
        Optional[str],
        typer.Option(help="How crops are cut: resized (30-100% of the photo, resized to --crop) or native "
                     "(windows at --train-size, an edit's local parts at their own scale). Default: nafnet native, others resized."),
    ] = None,
    log: Annotated[Optional[Path], typer.Option(help="CSV log of the run (default: OUTPUT with .csv).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    clip_grad: Annotated[
        Optional[float],
        typer.Option("--clip-grad", min=0.0, help="Clip gradients to this norm (0 = off; default: nafnet/diffir 1, LUTs off)."),
    ] = None,
    stage: Annotated[
        Optional[int],
        typer.Option(help="diffir only: run stage 1 or 2 alone (default: both, splitting --steps and --time-limit)."),
    ] = None,
    perceptual: Annotated[
        Optional[float],
        typer.Option(help="nafnet/diffir: weight of the LPIPS (AlexNet) loss term; 0 = off (default: 1 with --crop 32 or more, else 0)."),
    ] = None,
    pretrained: Annotated[
        Optional[str],
        typer.Option(help="ip2p only: base model, a diffusers folder or hub id (default timbrooks/instruct-pix2pix)."),
    ] = None,
    prompt: Annotated[Optional[str], typer.Option(help="ip2p only: the instruction the look is learned under.")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing -o file and its .state, log and stage-1 files.")
    ] = False,
    ema: Annotated[
        Optional[float],
        typer.Option("--ema", min=0.0, max=0.99999, help="Decay of the weight average (EMA) that is validated and "
                     "shipped, e.g. 0.999 (default off: it cost lut, nafnet and diffir PSNR at their budgets)."),
    ] = None,
    no_ema: Annotated[bool, typer.Option("--no-ema", help="Ship the raw weights, no average.")] = False,
    base: Annotated[
        Optional[str],
        typer.Option(help="nafnet/diffir: a whole-photo model's checkpoint (a trained lut or localtone) applied to each whole "
                     "photo first; the model learns what is left, and its file holds both. 'auto' trains a localtone "
                     "first on a quarter of the budget (kept as NAME.base.safetensors); 'none' for no base. "
                     "Default: the base of the --resume or --init checkpoint, if it has one."),
    ] = None,
    teacher: Annotated[
        Optional[str],
        typer.Option(help="lut: a trained model's checkpoint (a localtone of the same look) that says how the edit "
                     "changes over 192 random exposure, white-balance, contrast and saturation variations of the "
                     "training photos, half of each batch beside the real pairs. 'auto' (the lut's default) trains a "
                     "localtone first on a quarter of the budget (kept as NAME.teacher.safetensors); 'none' trains "
                     "on the real pairs alone."),
    ] = None,
    schedule: Annotated[
        Optional[str],
        typer.Option(help="Learning-rate shape after warm-up: cosine (decay over the whole run) or wsd (peak held, "
                     "decay in the last fifth); both end at a tenth of the peak at --steps or --time-limit "
                     "(default: wsd for nafnet and diffir, where it measured +0.3 to +1.6 dB; cosine otherwise)."),
    ] = None,
    stream: Annotated[
        Optional[bool],
        typer.Option("--stream/--in-memory", help="Read the pairs from a disk cache of decoded pairs instead of "
                     "holding them in memory (default: stream when they would take over 2 GB)."),
    ] = None,
    cache: Annotated[
        Optional[Path], typer.Option(help="Cache folder of decoded pairs (default ~/.cache/autohdr/pairs).")
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(min=0, help="Processes that read and crop the pairs ahead (default: 2 when streaming).")
    ] = None,
    precision: Annotated[
        str, typer.Option(help="auto (bf16 autocast on CUDA, fp32 on the CPU), fp32 or bf16.")
    ] = "auto",
) -> None:
    """Learn a look from before/after pairs and write it as a checkpoint.

    Unpaired files are listed first; the validation split is seeded (same as evaluate's). The checkpoint
    is written every --checkpoint-every steps and at the end, with FILE.state for --resume. Runs under
    torchrun --nproc_per_node N as DistributedDataParallel with the same command.
    Exit code 0 when done, 1 if training failed, 2 for a usage error (including unusable pairs).
    """
    import json
    import sys

    from .oneshot_fit import is_file_pair, train_oneshot
    from .train import TrainError, TrainOptions, parse_duration, train as run_training

    try:
        limit = parse_duration(time_limit) if time_limit else None
    except ValueError as e:
        raise _usage_error(f"--time-limit: {e}") from None
    try:
        model_config = json.loads(config) if config else {}
    except ValueError as e:
        raise _usage_error(f"--config is not JSON: {e}") from None
    if not isinstance(model_config, dict):
        raise _usage_error("--config must be a JSON object, e.g. '{\"lut_size\": 17}'")
    for name, value in (("pretrained", pretrained), ("prompt", prompt)):
        if value is not None:
            if model != "ip2p":
                raise _usage_error(f"--{name} is for --model ip2p only")
            model_config[name] = value
    cold_start = init == "none"  # the raw option: a file named none is --init ./none
    options = TrainOptions(
        pairs=pairs, output=output, model=model, config=model_config, steps=steps, time_limit=limit,
        batch=batch, lr=lr, weight_decay=weight_decay, seed=seed, split_seed=split_seed, device=device, resume=resume,
        val_split=val_split, val_list=val_list,
        init=None if cold_start or init is None else Path(init), pretrained_start=not cold_start,
        val_every=val_every, checkpoint_every=checkpoint_every, crop=crop, train_size=train_size,
        crops=crops, log=log, progress=not quiet and sys.stderr.isatty(), stage=stage, clip_grad=clip_grad,
        perceptual=perceptual,
        overwrite=overwrite,
        ema=0.0 if no_ema else ema, schedule=schedule, base=_base_option(base),
        teacher=_base_option(teacher), stream=stream, cache_dir=cache, workers=workers, precision=precision,
    )
    oneshot = _oneshot_options(options) if model == "oneshot" or is_file_pair(pairs) else None
    try:
        if oneshot is not None:
            train_oneshot(oneshot)
        else:
            run_training(options)
    except TrainError as e:
        raise _usage_error(str(e)) from None
    except (OSError, RuntimeError) as e:
        typer.echo(f"autohdr: training failed: {e}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    raise typer.Exit(EXIT_OK)

def _oneshot_options(options):
    """Check that ``train``'s arguments suit a one-shot look (two photo files imply ``--model oneshot``)."""
    import dataclasses

    from .oneshot_fit import is_file_pair

    files = [p for p in options.pairs if p.is_file()]
    if options.model not in ("lut", "oneshot") and is_file_pair(options.pairs):
        raise _usage_error(f"--model {options.model}: two photo files (BEFORE AFTER) train a one-shot look; "
                           "give a pairs folder to train another model")
    if files and not is_file_pair(options.pairs):
        raise _usage_error(f"{files[0]}: give a one-shot look's pair as exactly two photo files, BEFORE AFTER, "
                           "or give pairs folders")
    return dataclasses.replace(options, model="oneshot")


# ---- evaluate ------------------------------------------------------------------------------------


@app.command()
def evaluate(
    folders: Annotated[
        list[Path],
        typer.Argument(
            help="PRED_DIR TARGET_DIR: score results against targets (matched by file stem); "
            "or one PAIRS folder: run --weights/--lut models on it, scored beside identity.",
            metavar="PRED_DIR TARGET_DIR | PAIRS",
            show_default=False,
        ),
    ],
    source: Annotated[
        Optional[Path],
        typer.Option("--source", help="With PRED_DIR TARGET_DIR: the originals, scored as 'identity'."),
    ] = None,
    weights: Annotated[
        Optional[list[Path]],
        typer.Option("--weights", "-w", help="With PAIRS: a .safetensors checkpoint to score (repeatable)."),
    ] = None,
    lut: Annotated[
        Optional[list[Path]], typer.Option("--lut", help="With PAIRS: a .cube look to score (repeatable).")
    ] = None,
    split: Annotated[
        str, typer.Option(help="With PAIRS: 'all' pairs, or 'val', the validation split training holds out.")
    ] = "all",
    val_split: Annotated[
        float, typer.Option("--val-split", help="Fraction of the pairs in the validation split (as in train).")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the validation split (as in train).")] = 0,
    val_list: Annotated[
        Optional[Path],
        typer.Option("--val-list", help="With PAIRS: score exactly the pairs this file names (as train's "
                     "--val-list: the held-out source); implies --split val."),
    ] = None,
    lut_size: Annotated[
        Optional[int],
        typer.Option("--lut-size", min=0, max=65, help="With PAIRS: run the localtone checkpoints with their edit carried by a LUT of this many points per axis, as enhance --lut-size (others run as they are)."),
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="Write the summary and one record per photo as JSON.")
    ] = None,
    csv_path: Annotated[
        Optional[Path], typer.Option("--csv", help="Write one row per photo (models side by side) as CSV.")
    ] = None,
    html_dir: Annotated[
        Optional[Path],
        typer.Option("--html", help="Write index.html (self-contained, worst first) and contact_sheet.png here."),
    ] = None,
    sort: Annotated[
        str, typer.Option(help="Order of the HTML report and contact sheet, worst first: delta_e2000, lpips, psnr or ssim.")
    ] = "delta_e2000",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Score photos: PSNR, SSIM, CIEDE2000 and LPIPS per photo; mean, median and worst per model; model speed.

    Scores are taken on the values as written (8- or 16-bit). Missing, unreadable and size-mismatched
    files get one line each on stderr and the rest is scored; exit code 1 if any, 2 for a usage error.
    """
    import sys

    from . import evaluate as scoring, report

    if len(folders) not in (1, 2):
        raise _usage_error("give PRED_DIR TARGET_DIR, or one PAIRS folder with --weights/--lut")
    if split not in ("all", "val"):
        raise _usage_error(f"--split {split}: expected 'all' or 'val'")
    if not 0.0 < val_split < 1.0:
        raise _usage_error(f"--val-split {val_split}: expected a fraction between 0 and 1")
    if len(folders) == 2 and (weights or lut or split != "all" or val_list or lut_size is not None):
        raise _usage_error("--weights, --lut, --split, --val-list and --lut-size go with one PAIRS folder, not PRED_DIR TARGET_DIR")
    if val_list is not None:
        split = "val"
    if len(folders) == 1 and source is not None:
        raise _usage_error("--source goes with PRED_DIR TARGET_DIR (a PAIRS folder holds its own sources)")
    device = str(_device(device))
    models = []
    if len(folders) == 1:
        # A look or checkpoint that cannot be loaded is a usage error, as in enhance: nothing is scored.
        models, load_problems = scoring.load_models(weights or [], lut or [], device, settings={"lut_size": lut_size})
        if lut_size is not None and not load_problems and not any(named.settings for named in models):
            raise _usage_error(f"--lut-size: for {_setting_owners({'lut_size': '--lut-size'})} checkpoints only; none of the --weights is one")
        for line in load_problems[:-1]:
            typer.echo(f"autohdr: error: {line}", err=True)
        if load_problems:
            raise _usage_error(load_problems[-1])
    reporter = scoring.ProblemReporter(progress=not quiet and sys.stderr.isatty())
    try:
        with report.report_images(html_dir) as images, reporter:
            if len(folders) == 2:
                evaluation = scoring.evaluate_folders(
                    folders[0], folders[1], source,
                    images=images, sort_key=sort, on_problem=reporter.problem, on_progress=reporter.advance,
                )
            else:
                evaluation = scoring.evaluate_models(
                    folders[0], models,
                    split=split, val_fraction=val_split, seed=seed, val_list=val_list, device=device, images=images,
                    sort_key=sort, on_problem=reporter.problem, on_progress=reporter.advance,
                )
            failures = report.write_reports(
                evaluation, images, json_path=json_path, csv_path=csv_path, html_dir=html_dir
            )
    except scoring.EvaluateError as e:
        raise _usage_error(str(e)) from None
    report.print_summary(evaluation)
    for line in failures:
        typer.echo(line, err=True)
    raise typer.Exit(EXIT_FAILED if evaluation.problems or failures else EXIT_OK)


# ---- export / info -------------------------------------------------------------------------------


@app.command()
def export(
    weights: Annotated[Path, typer.Argument(help="A .safetensors checkpoint or a .cube look.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    output_format: Annotated[
        Optional[str],
        typer.Option("--format", "-f", help="cube, onnx, pt2 or safetensors (default: from the -o extension)."),
    ] = None,
    size: Annotated[int, typer.Option(min=2, max=256, help="cube: grid points per axis.")] = 33,
    image: Annotated[
        Optional[Path], typer.Option(help="cube, image-adaptive LUT model: bake the LUT it predicts for this photo.")
    ] = None,
    style: Annotated[
        Optional[str],
        typer.Option(help="Models with several looks (nilut): a look's name or index, or blend weights like 0.3,0.7."),
    ] = None,
    title: Annotated[Optional[str], typer.Option(help="safetensors/cube: the title stored in the file.")] = None,
    meta: Annotated[
        Optional[list[str]],
        typer.Option("--meta", help="safetensors: set metadata KEY=VALUE (stored as autohdr.KEY; empty removes)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the -o file if it exists.")] = False,
) -> None:
    """Export a model: a .cube LUT (global models), ONNX (opset 20), a torch.export .pt2 program, or the
    checkpoint re-saved with new metadata.

    ONNX and pt2 files are reloaded and checked against PyTorch on an input of another size before they
    are written. Exit code 0 when written, 1 if the export failed or did not match, 2 for a usage error.
    """
    from .export import ExportError, ExportFailed, ExportOptions, export_model

    options = ExportOptions(
        format=output_format, size=size, image=image, style=style, title=title, meta=list(meta or []),
        overwrite=overwrite,
    )
    try:
        result = export_model(weights, output, options)
    except ExportError as e:
        raise _usage_error(str(e)) from None
    except ExportFailed as e:
        typer.echo(f"autohdr: export failed: {e}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    typer.echo(result.line())
    raise typer.Exit(EXIT_OK)


@app.command()
def info(
    weights: Annotated[Path, typer.Argument(help="A .safetensors checkpoint or a .cube look.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show a weights file's model, config, training summary, parameter count and file size."""
    import json

    from .export import ExportError, describe, info_lines

    try:
        summary = describe(weights)
    except ExportError as e:
        raise _usage_error(str(e)) from None
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), indent=2, default=str))
    else:
        typer.echo("\n".join(info_lines(summary)))
    raise typer.Exit(EXIT_OK)
