"""benchmarks/best_of.py's summary: pass counts per kind at each N and N's wall time and tokens over one sample's,
checked against sums written out by hand."""
from benchmarks.best_of import summary


def run(task: str, kind: str, n: int, passed: bool, wall: float, computed: int) -> dict:
    return {"id": task, "kind": kind, "samples": n, "passed": passed, "wall_s": wall, "computed_tokens": computed,
            "completion_tokens": 10 * n, "prompt_tokens": 1000 * n, "cached_tokens": 900 * n}


def test_summary_sums_each_n_and_divides() -> None:
    runs = [run("a", "edit", 1, False, 100.0, 4000), run("a", "edit", 4, True, 150.0, 6000),
            run("b", "question", 1, True, 20.0, 1000), run("b", "question", 4, True, 40.0, 1500),
            run("c", "question", 1, False, 30.0, 500), run("c", "question", 4, False, 30.0, 2500)]
    out = summary(runs, 4)
    assert out["n1"]["passed"] == 1 and out["n4"]["passed"] == 2
    assert out["n1"]["passed_by_kind"] == {"edit": 0, "question": 1} and out["n4"]["passed_by_kind"] == \
        {"edit": 1, "question": 1}
    assert out["n1"]["wall_s"] == 150.0 and out["n4"]["wall_s"] == 220.0
    assert out["ratios"] == {"wall_s": round(220 / 150, 3), "computed_tokens": round(10000 / 5500, 3),
                             "completion_tokens": 4.0, "edit_wall_s": 1.5, "question_wall_s": round(70 / 50, 3)}
