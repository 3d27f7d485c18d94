"""The fidelity report: one markdown table for the repository README and the console."""

from __future__ import annotations


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _acc(a: dict | None) -> tuple[str, str]:
    if not a:
        return "-", "-"
    return f"{a['top1']:.2f}", f"{a['top5']:.2f}"


def table_rows(variant_rows: list[dict]) -> str:
    """Markdown table from rows {variant, graph, fidelity, accuracy, kept, status}."""
    head = ("| variant | graph (run by) | cosine mean / min | rel L2 | max abs | top-1 agree | top-5 agree "
            "| top-1 acc % | top-5 acc % | kept higher | status |")
    lines = [head, "|" + "---|" * 11]
    for r in variant_rows:
        fid = r.get("fidelity") or {}
        t1, t5 = _acc(r.get("accuracy"))
        cos = "-" if not fid else f"{fid['cosine_mean']:.6f} / {fid['cosine_min']:.6f}"
        agree1 = "-" if not fid else f"{fid['top1_agreement'] * 100:.1f}%"
        agree5 = "-" if not fid else f"{fid['top5_agreement'] * 100:.1f}%"
        lines.append(
            f"| {r['variant']} | {r['graph']} | {cos} | {_f(fid.get('rel_l2'), '.2e')} | {_f(fid.get('max_abs'), '.3g')} "
            f"| {agree1} | {agree5} | {t1} | {t5} | {r.get('kept', '-')} | {r.get('status', '-')} |"
        )
    return "\n".join(lines)


def per_class_table(variant_rows: list[dict], max_classes: int = 50) -> str:
    """Markdown table class x variant of top-1 "correct/images"; empty without labelled evaluation.

    At most `max_classes` rows (the classes FP32 gets most wrong first), so a 1000-class report stays readable.
    """
    rows = [r for r in variant_rows if (r.get("accuracy") or {}).get("per_class")]
    if not rows:
        return ""
    ref = rows[0]["accuracy"]["per_class"]
    classes = sorted(ref, key=lambda c: (ref[c][0] / max(ref[c][1], 1), c))[:max_classes]
    if len(classes) == len(ref):
        classes = list(ref)  # all of them: keep the class order
    head = "| class | " + " | ".join(f"{r['variant']}: {r['graph']}" for r in rows) + " |"
    lines = [head, "|---|" + "---|" * len(rows)]
    for c in classes:
        cells = []
        for r in rows:
            got = r["accuracy"]["per_class"].get(c)
            cells.append("-" if got is None else f"{got[0]}/{got[1]}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
