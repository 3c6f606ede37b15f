"""Human-readable tables of the evaluation reports (`eval`, `demo`, `retrieval`), printed by the
stage that owns them; the reports themselves are JSON-ready dicts."""
from __future__ import annotations

import sys

RETRIEVAL_METRICS = (("precision_at_1", "P@1"), ("r_precision", "R-prec"), ("map_at_r", "MAP@R"))


def print_eval(report: dict, timings: dict, source: str, params: str | None = None,
               file=None) -> None:
    """The `eval` / `demo` table: per-model top-1 / top-3 / MRR, their mean, the ensemble, chance.

    `params` names the params file the members came from (None: a random init).
    """
    file = file or sys.stdout
    m, n = report["num_models"], report["num_examples"]
    h, w = report["image_shape"][:2]
    print(f"test set: {source} ({n} examples, {h}x{w}, {report['image_dtype']})", file=file)
    members = (f"{m} random nets, seed {report['seed']}" if params is None
               else f"{m} member(s) from {params}")
    print(f"ensemble: {members}, embedded in {timings['embed_seconds']:.2f} s", file=file)
    print(f"{'model':>8} {'top-1':>7} {'top-3':>7} {'MRR':>7}", file=file)
    top3 = report["per_model_top_k_accuracy"]["3"]
    for i, (acc, t3, mrr) in enumerate(zip(report["per_model_accuracy"], top3,
                                           report["per_model_mrr"])):
        print(f"{i:>8} {acc:7.3f} {t3:7.3f} {mrr:7.3f}", file=file)
    lo, hi = report["mean_model_accuracy_interval"]
    print(f"single models: mean {report['mean_model_accuracy']:.3f}, "
          f"std {report['std_model_accuracy']:.3f} over {m} (95% CI of the mean "
          f"[{lo:.3f}, {hi:.3f}])", file=file)
    lo, hi = report["ensemble_accuracy_interval"]
    ens_top = report["ensemble_top_k_accuracy"]
    signal = report.get("signal")
    if signal is not None:          # a model that keeps its signal: members, signal, both
        for label, key in ((f"ensemble of {m} (members alone)", "members_accuracy"),
                           (f"signal member ({signal['kind']}) alone", "signal_accuracy")):
            print(f"{label}: {report[key]:.3f} (95% CI [{report[key + '_interval'][0]:.3f}, "
                  f"{report[key + '_interval'][1]:.3f}])", file=file)
    label = (f"model: {m} members + {signal['kind']} (weight {signal['weight']:g})"
             if signal is not None else f"ensemble of {m}")
    print(f"{label}: {report['ensemble_accuracy']:.3f} (95% CI [{lo:.3f}, {hi:.3f}]), "
          f"top-3 {ens_top['3']:.3f}, MRR {report['ensemble_mrr']:.3f}", file=file)
    print(f"chance: {report['chance']:.3f}", file=file)
    for path in report.get("plots", []):
        print(f"plot: {path}", file=file)


def print_retrieval(report: dict, source: str, file=None) -> None:
    """The `retrieval` table: per-member rows, the members' mean and the ensemble, with 95% intervals."""
    file = file or sys.stdout
    m = report["num_models"]
    print(f"pool: {source} ({report['num_items']} images, {report['num_queries']} queries, "
          f"{report['num_excluded_queries']} excluded with no other image of their object)",
          file=file)
    print(f"{'member':>8} " + " ".join(f"{short:>7}" for _, short in RETRIEVAL_METRICS), file=file)
    for i in range(m):
        print(f"{i:>8} " + " ".join(f"{report['per_member'][name][i]:7.3f}"
                                    for name, _ in RETRIEVAL_METRICS), file=file)
    signal = report.get("signal")
    rows = [("member mean", report["member_mean"]), (f"ensemble of {m}", report)]
    if signal is not None:          # a model that keeps its signal: members, signal, both
        rows = [rows[0], (f"ensemble of {m} (members alone)", report["members"]),
                (f"signal member ({signal['kind']}) alone", report["signal_member"]),
                (f"model: {m} members + {signal['kind']} (weight {signal['weight']:g})", report)]
    for label, rep in rows + [("chance", None)]:
        rep = rep or report["chance"]
        cells = [f"{short} {rep[name]:.3f}" + (
            " [{:.3f}, {:.3f}]".format(*rep[name + "_interval"]) if name + "_interval" in rep
            else "") for name, short in RETRIEVAL_METRICS]
        print(f"{label}: " + ", ".join(cells), file=file)
    recall = {k[len("recall_at_"):]: v for k, v in report.items()
              if k.startswith("recall_at_") and not k.endswith("interval")}
    print(f"{'model' if signal else 'ensemble'} Recall@K: "
          + ", ".join(f"@{k} {v:.3f}" for k, v in recall.items()), file=file)
