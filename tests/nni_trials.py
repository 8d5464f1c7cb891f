"""The trial function of the in-process NNI experiments in the tests: one SGD step on 32
digits, scored on the next 32; every trained model is recorded in ``TRAINED``."""
import torch

from osep_nas import count_params

#: (model type, #params, genotype) of every model a trial trained
TRAINED = []


def one_sgd_step(model, x, y):
    """(accuracy % on x[32:64], training loss) after one SGD step on x[:32]."""
    TRAINED.append((type(model), count_params(model), model.genotype))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x[:32]), y[:32])
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        acc = 100.0 * (model(x[32:64]).argmax(1) == y[32:64]).float().mean().item()
    return acc, loss.item()
