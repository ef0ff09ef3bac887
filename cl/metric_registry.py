"""The metric registry: every key a run logs (rows of metrics.jsonl, summary.json), declared
once with its label, definition, formula, paper, direction and where it is shown. The console
summary, the sweep tables, the report and the dashboard read it; every tracker names the keys
it logs from it; docs/metrics.md ends with its index (`markdown`). Keys with a variable part are
patterns (`eval/acc/task_{i}`); add-ons `register` their own (cl.l2m: `l2m/*`).

`shown_in` says where: console (end-of-run table), sweep (printed sweep table), objective
(a valid `sweep.metric`), report (the report's tables), figure (the plasticity chart).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GEM = "Lopez-Paz & Ranzato, Gradient Episodic Memory, NeurIPS 2017"
RWALK = "Chaudhry et al., Riemannian Walk, ECCV 2018"
SG = "De Lange, van de Ven & Tuytelaars, Continual evaluation ..., ICLR 2023"
NFR = "Yan et al., Positive-Congruent Training, CVPR 2021"
LOP = "Dohare et al., Loss of plasticity in deep continual learning, Nature 2024"
LYLE = "Lyle et al., Understanding plasticity in neural networks, ICML 2023"
TONEVA = "Toneva et al., An Empirical Study of Example Forgetting ..., ICLR 2019"
ROWS, SUMMARY, BOTH = ("rows",), ("summary",), ("rows", "summary")


@dataclass(frozen=True)
class Metric:
    """One key (or pattern of keys, `{name}` a variable part without `/`)."""

    key: str
    label: str
    definition: str
    formula: str = ""
    paper: str = ""
    lower_is_better: bool = False
    shown_in: tuple[str, ...] = ()
    logged_in: tuple[str, ...] = SUMMARY  # rows (metrics.jsonl) and/or summary (summary.json)
    final_only: bool = False  # defined only at the end of the stream (a partial run: left out)

    @property
    def is_pattern(self) -> bool:
        return "{" in self.key

    def match(self, key: str) -> dict[str, str] | None:
        """The values of the variable parts if `key` is this metric's, else None."""
        if not self.is_pattern:
            return {} if key == self.key else None
        m = _regex(self.key).fullmatch(key)
        return m.groupdict() if m else None


def _regex(pattern: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", pattern)
    return re.compile(
        "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    )


def _m(
    key, label, definition, formula="", paper="", lower=False, shown=(), logged=SUMMARY, final=False
):
    return Metric(key, label, definition, formula, paper, lower, shown, logged, final)


METRICS: dict[str, Metric] = {}


def register(*metrics: Metric) -> None:
    """Add metrics (an add-on's keys); a key registered twice must be the same metric."""
    for m in metrics:
        if METRICS.setdefault(m.key, m) != m:
            raise ValueError(f"metric {m.key!r} is registered twice, differently")


def find(key: str) -> Metric | None:
    """The metric of a logged key: its exact entry, else the first pattern it matches."""
    if key in METRICS:
        return METRICS[key]
    return next((m for m in METRICS.values() if m.is_pattern and m.match(key) is not None), None)


def label(key: str) -> str:
    """`key`'s label, its variable parts filled in (the key itself if unregistered)."""
    m = find(key)
    return m.label.format(**m.match(key)) if m else key


def final_only(key: str) -> bool:
    """Whether `key` is defined only at the end of the stream (ACC, BWT, FWT, forgetting)."""
    m = find(key)
    return m is not None and m.final_only


def shown(where: str) -> list[Metric]:
    """The metrics shown in `where`, in registry order."""
    return [m for m in METRICS.values() if where in m.shown_in]


def markdown() -> str:
    """The registry as the key index of docs/metrics.md."""
    lines = [
        "| key | label | logged in | lower is better | shown in | definition |",
        "|---|---|---|---|---|---|",
    ]
    for m in METRICS.values():
        text = " ".join(
            p for p in (m.definition, m.formula, f"({m.paper})" if m.paper else "") if p
        )
        cells = (
            f"`{m.key}`", m.label, ", ".join(m.logged_in), "yes" if m.lower_is_better else "",
            ", ".join(m.shown_in), text.replace("|", "\\|"),
        )  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


OBJ = ("objective",)
register(
    # --- the run ---
    _m("status", "status", "finished, interrupted or failed"),
    _m(
        "complete",
        "complete",
        "true when the run trained the whole stream; false for an interrupted or failed run, "
        "whose final-only metrics (ACC, BWT, FWT, forgetting) cover only the tasks seen",
    ),
    _m(
        "covers",
        "covers",
        "what the numbers cover: training iterations done, tasks seen (started) and the "
        "stream's number of tasks",
        "{iterations, tasks_seen, of_tasks}",
    ),
    _m("error", "error", "why the run failed, when it did"),
    _m("deterministic", "deterministic", "run.deterministic, when cl set torch's flags"),
    _m("iteration", "iteration", "training iterations done", logged=ROWS),
    _m("experience", "experience", "experience being trained (from 0)", logged=ROWS),
    _m("epoch", "epoch", "epoch of the experience being trained", logged=ROWS),
    # --- accuracy family (cl/trackers/accuracy.py) ---
    _m(
        "eval/acc/task_{i}",
        "accuracy on task {i}",
        "accuracy on task i's fixed evaluation subset",
        "A(i, n)",
        logged=ROWS,
    ),
    _m(
        "eval/loss/task_{i}",
        "loss on task {i}",
        "mean cross-entropy on task i's evaluation subset",
        lower=True,
        logged=ROWS,
    ),
    _m(
        "eval/acc/avg_seen",
        "accuracy (seen tasks)",
        "mean accuracy over the tasks seen so far",
        "(1/(k+1)) Σ_{i≤k} A(i, n)",
        logged=ROWS,
    ),
    _m("sg/min_acc", "min-ACC so far", "min-ACC at this evaluation", paper=SG, logged=ROWS),
    _m("sg/wc_acc", "WC-ACC so far", "WC-ACC at this evaluation", paper=SG, logged=ROWS),
    _m(
        "sg/wf_{w}",
        "WF^{w} so far",
        "windowed forgetting at this evaluation",
        paper=SG,
        lower=True,
        logged=ROWS,
    ),
    _m(
        "sg/wp_{w}",
        "WP^{w} so far",
        "windowed plasticity at this evaluation",
        paper=SG,
        logged=ROWS,
    ),
    _m(
        "acc",
        "ACC (final average accuracy)",
        "mean final accuracy over all tasks",
        "ACC = (1/T) Σ_i R[T−1, i]",
        GEM,
        shown=("console", "sweep", "objective", "report"),
        final=True,
    ),
    _m(
        "aaa",
        "AAA (average anytime accuracy)",
        "mean over evaluations during training of the seen tasks' mean accuracy",
        "(1/N) Σ_n (1/(k(n)+1)) Σ_{i≤k(n)} A(i, n)",
        "Caccia et al., ICLR 2022",
        shown=("console", "objective"),
    ),
    _m(
        "bwt",
        "BWT (backward transfer)",
        "mean change of each task's accuracy since it was learned",
        "BWT = 1/(T−1) Σ_{i<T−1} (R[T−1, i] − R[i, i])",
        GEM,
        shown=("console", "sweep", "objective", "report"),
        final=True,
    ),
    _m(
        "fwt",
        "FWT (forward transfer)",
        "mean accuracy on a task just before learning it, over its accuracy before any training",
        "FWT = 1/(T−1) Σ_{i≥1} (R[i−1, i] − b[i])",
        GEM,
        shown=("console", "objective"),
        final=True,
    ),
    _m(
        "forgetting",
        "forgetting (max-based)",
        "mean over old tasks of the best earlier accuracy minus the final one",
        "f_j = max_{l<T−1} R[l, j] − R[T−1, j]",
        RWALK,
        lower=True,
        shown=("console", "sweep", "objective", "report"),
        final=True,
    ),
    _m(
        "forgetting_per_task",
        "forgetting per task",
        "max-based forgetting f_j of each old task",
        paper=RWALK,
        lower=True,
        final=True,
    ),
    _m(
        "forgetting_initial_last",
        "forgetting (initial-last)",
        "mean over old tasks of the accuracy right after learning minus the final one",
        "f_j = R[j, j] − R[T−1, j]",
        "Avalanche StreamForgetting",
        lower=True,
        shown=OBJ,
        final=True,
    ),
    _m(
        "forgetting_initial_last_per_task",
        "forgetting (initial-last) per task",
        "f_j = R[j, j] − R[T−1, j] of each old task",
        lower=True,
        final=True,
    ),
    _m(
        "min_acc",
        "min-ACC (stability gap)",
        "mean over old tasks of their lowest accuracy after their own experience ended",
        "mean_{i<k} min_{n: k(n)>i} A(i, n)",
        SG,
        shown=("console", "sweep", "objective", "report"),
    ),
    _m(
        "wc_acc",
        "WC-ACC (worst-case accuracy)",
        "mean of the current task's accuracy and the old tasks' minima",
        "(1/(k+1)) A(k) + (1 − 1/(k+1)) min-ACC",
        SG,
        shown=("console", "sweep", "objective", "report"),
    ),
    _m(
        "lca",
        "LCA (learning curve area)",
        "per task, the mean of its first β evaluations while "
        "it is learned (β = metrics.lca_beta), averaged over tasks",
        paper="Chaudhry et al., A-GEM, ICLR 2019",
        shown=OBJ,
    ),
    _m(
        "wf_{w}",
        "WF^{w} (windowed forgetting)",
        "per task, the largest drop between two "
        "evaluations at most w−1 apart, floored at 0; mean over tasks seen",
        "max_{a<b≤a+w−1} A(i, a) − A(i, b)",
        SG,
        lower=True,
        shown=("console", "objective"),
    ),
    _m(  # before wp_{w}, whose pattern would also match it
        "wp_official_{w}",
        "WP^{w} as the official code computes it",
        "as WP^w, but a rise starts only at a running maximum of the window (the official "
        "code's forgetting loop): on [0.5, 0.2, 0.9] it gives 0.4 where WP^w gives 0.7",
        "max over a that are running maxima, b ≤ a+w−1 of A(i, b) − A(i, a)",
        SG + " (code: Mattdl/ContinualEvaluation)",
    ),
    _m(
        "wp_{w}",
        "WP^{w} (windowed plasticity)",
        "as WF^w with the largest rise",
        "max_{a<b≤a+w−1} A(i, b) − A(i, a)",
        SG,
        shown=OBJ,
    ),
    _m(
        "gap_depth",
        "gap depth (mean drop after a switch)",
        "mean over (switch, old task) pairs of the task's accuracy at the last evaluation "
        "before the switch minus its lowest accuracy during the new experience",
        lower=True,
        shown=("console", "objective", "report"),
    ),
    _m(
        "recovery_time",
        "recovery time (iterations)",
        "mean, over the (switch, old task) pairs whose accuracy fell below its pre-switch value "
        "minus metrics.recovery_tolerance and got back within the experience, of the training "
        "iterations from the switch until it was back (null if no pair recovered)",
        lower=True,
        shown=("console", "objective"),
    ),
    _m(
        "recovery_rate",
        "recovery rate",
        "share of the (switch, old task) pairs whose accuracy fell below its pre-switch value "
        "minus metrics.recovery_tolerance that got back within the experience (null if none "
        "fell)",
        shown=OBJ,
    ),
    _m(
        "n_unrecovered",
        "pairs never recovered",
        "number of (switch, old task) pairs whose accuracy fell below its pre-switch value "
        "minus metrics.recovery_tolerance and did not get back within the experience",
        lower=True,
        shown=("console", "objective"),
    ),
    _m(
        "accuracy_matrix",
        "accuracy matrix",
        "R[i, j]: accuracy on task j at the last evaluation of experience i",
    ),
    # --- online accuracy (cl/trackers/online.py) ---
    _m(
        "train/loss",
        "training loss",
        "mean training loss (task + strategy terms) over the iterations since the last row",
        lower=True,
        logged=ROWS,
    ),
    _m(
        "train/online_acc",
        "online accuracy (window)",
        "prequential accuracy of the training "
        "batches since the last row, scored before each update",
        logged=ROWS,
    ),
    _m(
        "online_acc",
        "online accuracy",
        "mean prequential accuracy of the training batches, scored before each update",
        paper=LOP,
        shown=("console", "objective", "report"),
    ),
    _m(
        "online_acc_per_task",
        "online accuracy per task",
        "online accuracy of each experience",
        paper=LOP,
    ),
    _m(
        "learning_speed",
        "learning speed",
        "iterations into an experience until the moving "
        "average of the online accuracy reaches metrics.speed_target; mean over tasks that did",
        lower=True,
        shown=OBJ,
    ),
    _m(
        "learning_speed_per_task",
        "learning speed per task",
        "learning speed of each experience (null: never reached)",
        lower=True,
    ),
    # --- negative flips (cl/trackers/nfr.py) ---
    _m(
        "forgetting/nfr",
        "negative flip rate",
        "negative flip rate at this task switch",
        paper=NFR,
        lower=True,
        logged=ROWS,
    ),
    _m(
        "nfr",
        "NFR (negative flip rate)",
        "share of old tasks' evaluation samples correct after "
        "experience k−1 and wrong after experience k; mean over switches",
        "#{correct → wrong} / #samples",
        NFR,
        lower=True,
        shown=OBJ,
    ),
    _m(
        "nfr_per_switch",
        "NFR per switch",
        "negative flip rate at each switch",
        paper=NFR,
        lower=True,
    ),
    # --- plasticity probe (cl/trackers/plasticity.py) ---
    _m(
        "plasticity/dead_units",
        "dead units",
        "fraction of hidden units with |h| ≤ plasticity.dead_threshold on every probe input",
        paper=LOP,
        lower=True,
        shown=("figure",),
        logged=ROWS,
    ),
    _m(
        "plasticity/dead_units/{layer}",
        "dead units ({layer})",
        "dead-unit fraction of one hidden layer",
        lower=True,
        logged=ROWS,
    ),
    _m(
        "plasticity/effective_rank",
        "effective rank",
        "effective rank of the penultimate features on the probe",
        "exp(−Σ_k p_k log p_k), p_k = σ_k / Σ σ",
        "Roy & Vetterli 2007",
        shown=("figure",),
        logged=ROWS,
    ),
    _m(
        "plasticity/stable_rank",
        "stable rank",
        "stable rank of the penultimate features",
        "Σ σ² / σ_max²",
        logged=ROWS,
    ),
    _m(
        "plasticity/srank_99",
        "srank_0.01",
        "smallest number k of the largest singular values of the penultimate features on the "
        "probe batch whose sum reaches 99% of the sum of all singular values (δ = 0.01)",
        "min k with Σ_{i≤k} σ_i ≥ 0.99 Σ_i σ_i",
        paper="Kumar et al., ICLR 2021",
        logged=ROWS,
    ),
    _m(
        "plasticity/weight_mag",
        "weight magnitude",
        "mean absolute weight",
        "Σ|θ| / #θ",
        LOP,
        shown=("figure",),
        logged=ROWS,
    ),
    _m(
        "plasticity/weight_mag/{layer}",
        "weight magnitude ({layer})",
        "mean absolute weight of one layer",
        logged=ROWS,
    ),
    _m(
        "plasticity/grad_norm",
        "gradient norm",
        "global gradient norm of the probe iteration's training step, before strategies edit it",
        "√(Σ_θ ‖∂L/∂θ‖²)",
        shown=("figure",),
        logged=ROWS,
    ),
    _m(
        "dead_units",
        "dead units (fraction)",
        "dead-unit fraction at the last probe",
        paper=LOP,
        lower=True,
        shown=("console", "objective"),
    ),
    _m(
        "effective_rank",
        "effective rank",
        "effective rank at the last probe",
        paper="Roy & Vetterli 2007",
        shown=OBJ,
    ),
    _m("stable_rank", "stable rank", "stable rank at the last probe", "Σ σ² / σ_max²", shown=OBJ),
    _m(
        "srank_99",
        "srank_0.01",
        "srank_0.01 at the last probe: smallest number k of the largest singular values of the "
        "penultimate features whose sum reaches 99% of the sum of all singular values",
        "min k with Σ_{i≤k} σ_i ≥ 0.99 Σ_i σ_i",
        paper="Kumar et al., ICLR 2021",
        shown=OBJ,
    ),
    _m(
        "weight_mag",
        "weight magnitude",
        "mean absolute weight at the last probe",
        paper=LOP,
        shown=OBJ,
    ),
    _m("grad_norm", "gradient norm", "gradient norm at the last probe", shown=OBJ),
    # --- strategy statistics (cl/trackers/strategy_stats.py) ---
    _m(
        "strategy/{name}/{stat}",
        "{name}: {stat}",
        "a strategy's own statistic "
        "(Strategy.metrics()): rows the mean since the last row, summary the mean over the run",
        logged=BOTH,
    ),
    # --- example forgetting (cl/trackers/example_forgetting.py), per set: eval or train ---
    _m(
        "example_forgetting/{set}/events",
        "forgetting events ({set})",
        "forgetting events (correct → wrong) at this evaluation",
        paper=TONEVA,
        lower=True,
        logged=ROWS,
    ),
    _m(
        "example_forgetting/{set}/cumulative",
        "forgetting events so far ({set})",
        "forgetting events up to this evaluation",
        paper=TONEVA,
        lower=True,
        logged=ROWS,
    ),
    _m(
        "example_forgetting/{set}/unforgettable",
        "unforgettable ({set})",
        "among samples learned at least once, the fraction never forgotten",
        paper=TONEVA,
    ),
    _m(
        "example_forgetting/{set}/never_learned",
        "never learned ({set})",
        "fraction of samples never correct",
        paper=TONEVA,
        lower=True,
    ),
    _m(
        "example_forgetting/{set}/events_per_sample",
        "events per sample ({set})",
        "mean forgetting events per sample",
        paper=TONEVA,
        lower=True,
    ),
    _m(
        "example_forgetting/{set}/events_per_sample_per_task",
        "events per sample per task ({set})",
        "mean forgetting events per sample of each task",
        paper=TONEVA,
        lower=True,
    ),
    _m(
        "example_forgetting/{set}/events_after_switch",
        "events after a switch ({set})",
        "forgetting events at rows within metrics.example_forgetting.window iterations after a "
        "task switch",
        lower=True,
    ),
    _m(
        "example_forgetting/{set}/events_inside",
        "events inside tasks ({set})",
        "forgetting events at all other rows",
        lower=True,
    ),
    _m(
        "example_forgetting/{set}/switch_share",
        "switch share ({set})",
        "after / (after + inside) of the forgetting events",
    ),
    _m(
        "example_forgetting/{set}/rate_after_switch",
        "event rate after a switch ({set})",
        "forgetting events per row after a switch",
        lower=True,
    ),
    _m(
        "example_forgetting/{set}/rate_inside",
        "event rate inside tasks ({set})",
        "forgetting events per row inside tasks",
        lower=True,
    ),
    _m(
        "example_forgetting/{set}/old_events_after_switch",
        "old-task events after a switch ({set})",
        "events_after_switch on old tasks only (tasks before k(n))",
        lower=True,
    ),
    _m(
        "example_forgetting/{set}/old_events_inside",
        "old-task events inside tasks ({set})",
        "events_inside on old tasks only",
        lower=True,
    ),
    _m(
        "example_forgetting/{set}/old_switch_share",
        "old-task switch share ({set})",
        "switch_share on old tasks only",
    ),
    _m(
        "example_forgetting/{set}/old_rate_after_switch",
        "old-task event rate after a switch ({set})",
        "rate_after_switch on old tasks only",
        lower=True,
    ),
    _m(
        "example_forgetting/{set}/old_rate_inside",
        "old-task event rate inside tasks ({set})",
        "rate_inside on old tasks only (rows of experiences 1..)",
        lower=True,
    ),
)
for _suffix, _kind in (("", "Gaussian targets"), ("_offset", "offset targets y = f(x) + noise")):
    register(
        _m(
            f"plasticity/probe_loss{_suffix}",
            f"probe loss{_suffix}",
            f"trainability probe "
            f"({_kind}): MSE of a copy of the model after plasticity.probe_steps Adam steps",
            "b(θ)",
            LYLE,
            lower=True,
            logged=ROWS,
        ),
        _m(
            f"plasticity/probe_loss_initial{_suffix}",
            f"probe loss before training{_suffix}",
            f"trainability probe ({_kind}): MSE before the first step",
            paper=LYLE,
            logged=ROWS,
        ),
        _m(
            f"plasticity/probe_gain{_suffix}",
            f"probe gain{_suffix}",
            f"trainability probe ({_kind}): 1 − final / initial MSE",
            paper=LYLE,
            logged=ROWS,
        ),
        _m(
            f"probe_loss{_suffix}",
            f"probe loss{_suffix}",
            f"trainability probe ({_kind}): probe loss at the last probe",
            "b(θ_t)",
            LYLE,
            lower=True,
        ),
        _m(
            f"probe_loss_initial{_suffix}",
            f"first probe loss{_suffix}",
            f"trainability probe ({_kind}): probe loss before training",
            "b(θ_0)",
            LYLE,
        ),
        _m(
            f"plasticity_loss{_suffix}",
            f"loss of plasticity{_suffix}",
            f"trainability probe ({_kind}): last probe loss minus the first",
            "P(t) = b(θ_t) − b(θ_0)",
            LYLE,
            lower=True,
        ),
    )
register(
    _m(
        "n_iterations",
        "training iterations",
        "training iterations done",
        shown=("console", "objective"),
    ),
    _m("n_eval_rows", "evaluations logged", "evaluation rows logged", shown=("console",)),
    _m(
        "wall_time_s",
        "wall time (s)",
        "wall time of the run's loop and outputs (this process)",
        lower=True,
        shown=("console", "objective"),
    ),
)
