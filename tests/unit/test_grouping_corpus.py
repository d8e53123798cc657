"""Grouping quality over the stack-trace corpus in tests/corpus/.

The corpus has one directory per intended issue (``<language>/<issue>/``) holding several
events: ``vN.txt`` is an ``exception.stacktrace`` value and ``vN.json`` optional attributes
(``type``, ``message``, ``language``). Events in one directory must end up in one issue,
events in different directories in different issues. Issues are formed the way the store does:
an event joins the issue that already owns one of its hashes, else it opens a new one.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporters.errors.grouping import Grouper, GroupingResult

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


@dataclass(frozen=True)
class CorpusEvent:
    """One corpus event and the issue it is meant to belong to."""

    issue: str
    name: str
    stacktrace: str | None
    attributes: dict[str, str]


def load_corpus() -> list[CorpusEvent]:
    """Every event of the corpus, in a stable order."""
    events = []
    for issue_dir in sorted(p for p in CORPUS.glob("*/*") if p.is_dir()):
        stems = sorted({p.stem for p in issue_dir.iterdir() if p.suffix in (".txt", ".json")})
        for stem in stems:
            txt, meta = issue_dir / f"{stem}.txt", issue_dir / f"{stem}.json"
            events.append(
                CorpusEvent(
                    issue=f"{issue_dir.parent.name}/{issue_dir.name}",
                    name=f"{issue_dir.parent.name}/{issue_dir.name}/{stem}",
                    stacktrace=txt.read_text() if txt.exists() else None,
                    attributes=json.loads(meta.read_text()) if meta.exists() else {},
                )
            )
    return events


def group_event(grouper: Grouper, event: CorpusEvent) -> GroupingResult:
    """Group a corpus event the way the exporter will: attributes plus the stack trace."""
    return grouper.group(
        exc_type=event.attributes.get("type"),
        message=event.attributes.get("message"),
        stacktrace=event.stacktrace,
        language=event.attributes.get("language"),
    )


def assign_issues(results: list[GroupingResult]) -> list[int]:
    """Emulate the store: join the issue owning any hash (primary first), else open one."""
    owner: dict[str, int] = {}
    issues: list[int] = []
    for result in results:
        issue = next((owner[h] for h in result.hashes if h in owner), None)
        if issue is None:
            issue = len(set(issues))
        for h in result.hashes:
            owner.setdefault(h, issue)
        issues.append(issue)
    return issues


def pairwise_scores(truth: list[str], predicted: list[int]) -> tuple[float, float, int, int, int]:
    """Pairwise precision and recall of a clustering, with the TP / FP / FN counts."""
    tp = fp = fn = 0
    for i, j in itertools.combinations(range(len(truth)), 2):
        same_truth = truth[i] == truth[j]
        same_pred = predicted[i] == predicted[j]
        if same_truth and same_pred:
            tp += 1
        elif same_pred:
            fp += 1
        elif same_truth:
            fn += 1
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, tp, fp, fn


def test_corpus_is_large_and_covers_every_language() -> None:
    events = load_corpus()
    assert len(events) >= 60
    languages = {e.issue.split("/")[0] for e in events}
    assert languages == {"python", "javascript", "java", "go", "dotnet", "ruby"}
    # Every intended issue has variants, and several issues are meant to stay apart.
    per_issue: dict[str, int] = {}
    for e in events:
        per_issue[e.issue] = per_issue.get(e.issue, 0) + 1
    assert min(per_issue.values()) >= 2
    assert len(per_issue) >= 25


def test_corpus_pairwise_precision_and_recall(capsys: pytest.CaptureFixture[str]) -> None:
    events = load_corpus()
    grouper = Grouper(cache_size=0)
    results = [group_event(grouper, e) for e in events]
    predicted = assign_issues(results)
    truth = [e.issue for e in events]
    precision, recall, tp, fp, fn = pairwise_scores(truth, predicted)
    with capsys.disabled():
        print(
            f"\ncorpus: {len(events)} events, {len(set(truth))} intended issues, {len(set(predicted))} issues formed; "
            f"pairwise precision {precision:.4f} recall {recall:.4f} (tp={tp} fp={fp} fn={fn})"
        )
    split = sorted({e.name for e, p in zip(events, predicted, strict=True) if predicted[truth.index(e.issue)] != p})
    merged = sorted(
        {
            f"{a.issue} + {b.issue}"
            for (a, pa), (b, pb) in itertools.combinations(zip(events, predicted, strict=True), 2)
            if pa == pb and a.issue != b.issue
        }
    )
    assert precision == 1.0, f"different issues merged: {merged}"
    assert recall >= 0.95, f"events split from their issue: {split}"


def test_every_corpus_trace_yields_frames() -> None:
    grouper = Grouper(cache_size=0)
    for event in load_corpus():
        result = group_event(grouper, event)
        if event.stacktrace is None:
            assert result.metadata["grouping"] == "message", event.name
            continue
        assert result.stacktrace.has_frames, event.name
        assert result.metadata["grouping"] in ("app", "system"), event.name
        assert result.stacktrace.language == event.issue.split("/")[0], event.name
        assert result.title and result.title != "<unknown>", event.name
