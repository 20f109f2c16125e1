"""Whole training steps and inference of real CNNs: fastconv.nn against torch.

    pytest bench/test_bench_models.py --benchmark-group-by=group

One SGD-with-momentum step (forward, cross-entropy, backward, update) on a batch of 64 3x32x32 images,
and eval-mode inference, for the VGG-, ResNet-8- and DenseNet-style models of ``fastconv.bench``; the
fastconv model is the torch one converted by ``nn.from_torch`` (same weights).  ``fastconv bench
--models`` prints the same comparison as one table with ratios.
"""

import numpy as np
import pytest

from fastconv import nn
from fastconv.bench import torch_models

torch = pytest.importorskip("torch")

MODELS = ["vgg", "resnet8", "densenet"]


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((64, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 64)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("impl", ["fastconv", "torch"])
def test_train_step(benchmark, name, impl):
    torch.manual_seed(0)
    tmodel = torch_models(torch)[name](32).train()
    x, target = batch()
    benchmark.group = f"train step {name}"
    if impl == "torch":
        opt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
        xt, tt = torch.from_numpy(x), torch.from_numpy(target)

        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(tmodel(xt), tt).backward()
            opt.step()

    else:
        model = nn.from_torch(tmodel)
        opt, loss_fn = nn.SGD(model.parameters(), lr=0.01, momentum=0.9), nn.CrossEntropyLoss()

        def step():
            opt.zero_grad()
            loss_fn(model(x), target)
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()

    benchmark(step)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("impl", ["fastconv", "torch"])
def test_inference(benchmark, name, impl):
    torch.manual_seed(0)
    tmodel = torch_models(torch)[name](32).eval()
    x, _ = batch()
    benchmark.group = f"inference {name}"
    if impl == "torch":
        xt = torch.from_numpy(x)
        with torch.no_grad():
            benchmark(tmodel, xt)
    else:
        model = nn.fold_batch_norm(nn.from_torch(tmodel))
        benchmark(model, x)
