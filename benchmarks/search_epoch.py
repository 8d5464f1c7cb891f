"""Time of one one-shot (DARTS) search epoch: OSepDartsSpace vs NNI's stock DARTS space.

Both spaces get the same cell count, width and data (scikit-learn digits upsampled to
32x32, a fixed number of training batches) and run NNI 3.0's DARTS strategy through
``NasExperiment`` with the sequential engine; the wall time of ``run()`` is the epoch.

    python benchmarks/search_epoch.py --device cpu [--cells 5 --width 8 --batches 10]
"""
from __future__ import annotations

import tempfile
import time
import warnings

import torch

from _timing import common_args, machine, setup, write_json


def _epoch_seconds(space, batches: int, batch_size: int, device: torch.device, workdir: str) -> float:
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni.nas.strategy import DARTS
    from torch.utils.data import TensorDataset

    from osep_nas.data import load_digits_tensors

    digits = load_digits_tensors(image_size=32)
    x, y = digits[0], digits[1]
    n = batches * batch_size
    train = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(x[n:n + batch_size], y[n:n + batch_size]), batch_size=batch_size)
    evaluator = Classification(train_dataloaders=train, val_dataloaders=val, num_classes=10, learning_rate=0.025,
                               max_epochs=1, limit_val_batches=1, accelerator="gpu" if device.type == "cuda" else "cpu",
                               devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                               enable_model_summary=False)
    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = workdir
    exp = NasExperiment(space, evaluator, DARTS(), config)
    t0 = time.perf_counter()
    try:
        exp.run()
    finally:
        exp.stop()
    return time.perf_counter() - t0


def main() -> None:
    p = common_args(__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=5)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    device = setup(args)
    warnings.filterwarnings("ignore")
    from nni.nas.hub.pytorch import DARTS as StockDarts

    from search_spaces import OSepDartsSpace

    spaces = {
        "NNI hub DARTS (darts ops)": lambda: StockDarts(width=args.width, num_cells=args.cells, dataset="cifar"),
        "OSepDartsSpace darts ops": lambda: OSepDartsSpace("darts", init_channels=args.width, layers=args.cells),
        "OSepDartsSpace osep ops": lambda: OSepDartsSpace("osep", init_channels=args.width, layers=args.cells),
    }
    times = {k: [] for k in spaces}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(max(1, args.repeats)):
            for name, make in spaces.items():
                times[name].append(_epoch_seconds(make(), args.batches, args.batch_size, device, tmp))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    base = med["NNI hub DARTS (darts ops)"]
    print(f"one DARTS search epoch: {args.batches} batches of {args.batch_size}, {args.cells} cells, width {args.width}, "
          f"{device}")
    print(f"{'space':<30}{'seconds':>10}{'ratio to NNI hub':>18}")
    for k, v in med.items():
        print(f"{k:<30}{v:>10.1f}{v / base:>18.2f}")
    if args.json:
        write_json(args.json, {"machine": machine(device), "args": vars(args), "seconds": med,
                               "ratio_to_nni_hub": {k: v / base for k, v in med.items()}})


if __name__ == "__main__":
    main()
