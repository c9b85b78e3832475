"""How often each rule for "the ensemble is below its best member" is wrong, on simulated sets.

    python benchmarks/ensemble_gap_rule.py [--items 213] [--members 8] [--sets 300]

On a photo set of a few hundred, the best of eight members is picked on the very photos it is
compared on, so it reads above the ensemble by luck alone. This simulates sets where the ensemble
and its members are all right with the same chance (55 %), each item's outcome shared with a
common one with probability ``--shared`` (members of one ensemble err on the same faces), and
counts how often each rule calls the ensemble "below": the package's
(:func:`fer_utils.evaluation.gap_to_best_member`: exact McNemar per member, one-sided, Bonferroni)
and a paired bootstrap of "ensemble minus the best member, re-picked on each resample"
(scipy.stats.bootstrap, percentile and basic intervals), which was tried first. It also counts how
often the package's rule sees a member that truly leads by 3, 5 or 10 points (power). Nothing here
reads a photo.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_utils.evaluation import gap_to_best_member  # noqa: E402

CLASSES = 7


def answers(labels: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Probabilities that are right where ``right`` is, and name the next class elsewhere."""
    return np.eye(CLASSES)[np.where(right, labels, (labels + 1) % CLASSES)] * 0.9 + 0.1 / CLASSES


def equal_models(rng: np.random.Generator, items: int, models: int, shared: float, chance: float = 0.55) -> list[np.ndarray]:
    """Right/wrong per item for ``models`` equally good models (the first is the ensemble)."""
    common = rng.random(items) < chance
    return [np.where(rng.random(items) < shared, common, rng.random(items) < chance) for _ in range(models)]


def better_member(rng: np.random.Generator, labels: np.ndarray, members: int, shared: float, lead: float):
    """An ensemble right 50 % of the time, one member right ``50 % + lead``, the others at 50 %; each
    member's outcome is the ensemble's with probability ``shared``, and its own outcomes carry the lead."""
    items = len(labels)
    ensemble = rng.random(items) < 0.5
    own = rng.random(items)
    # a copied outcome is right with 50 %, so a fresh one must be right with 50 % + lead / (1 - shared)
    better = np.where(rng.random(items) < shared, ensemble, own < min(1.0, 0.5 + lead / (1 - shared)))
    others = [np.where(rng.random(items) < shared, ensemble, rng.random(items) < 0.5) for _ in range(members - 1)]
    return (answers(labels, ensemble),
            {"better": answers(labels, better), **{f"o{i}": answers(labels, o) for i, o in enumerate(others)}})


def bootstrap_says_below(columns: list[np.ndarray], method: str, seed: int, resamples: int) -> bool:
    from scipy.stats import bootstrap

    def statistic(*c, axis=-1):
        means = np.stack([np.mean(x, axis=axis) for x in c])
        return means[0] - means[1:].max(axis=0)

    result = bootstrap(tuple(c.astype(float) for c in columns), statistic, paired=True, vectorized=True,
                       n_resamples=resamples, method=method, random_state=np.random.default_rng(seed))
    return bool(result.confidence_interval.high < 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=213, help="items per set (JAFFE: 213 photos)")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--sets", type=int, default=300, help="simulated sets per case")
    parser.add_argument("--shared", type=float, nargs="+", default=[0.0, 0.7],
                        help="chance that an item's outcome is the common one, per case")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per set")
    parser.add_argument("--leads", type=float, nargs="+", default=[0.03, 0.05, 0.10],
                        help="true leads of one member over the ensemble, for the power table")
    args = parser.parse_args(argv)
    labels = np.arange(args.items) % CLASSES
    print(f"{args.sets} sets of {args.items} items, an ensemble and {args.members} members all equally good: "
          "share of sets where each rule calls the ensemble below its best member (should be at most 0.05)\n")
    print("| outcomes shared | exact McNemar, Bonferroni | bootstrap, percentile | bootstrap, basic |")
    print("|---|---|---|---|")
    for shared in args.shared:
        counts = {"mcnemar": 0, "percentile": 0, "basic": 0}
        for seed in range(args.sets):
            columns = equal_models(np.random.default_rng(seed), args.items, args.members + 1, shared)
            gap = gap_to_best_member(labels, answers(labels, columns[0]),
                                     {f"m{i}": answers(labels, c) for i, c in enumerate(columns[1:])})
            counts["mcnemar"] += gap.below
            for method in ("percentile", "basic"):
                counts[method] += bootstrap_says_below(columns, method, seed, args.resamples)
        print(f"| {shared:.1f} | " + " | ".join(f"{counts[k] / args.sets:.3f}" for k in counts) + " |")
    print(f"\nOne member truly better than an ensemble right on 50 % (the other members as good as the ensemble; "
          f"each member's outcome is the ensemble's with probability {args.shared[-1]:.1f}): share of sets where "
          "the McNemar rule sees it\n")
    print("| the member's lead | sets where it is seen |")
    print("|---|---|")
    for lead in args.leads:
        told = 0
        for seed in range(args.sets):
            told += gap_to_best_member(labels, *better_member(np.random.default_rng(seed), labels, args.members,
                                                               args.shared[-1], lead)).below
        print(f"| {100 * lead:.0f} points | {told / args.sets:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
