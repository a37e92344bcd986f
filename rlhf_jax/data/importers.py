"""Public preference datasets as comparisons, so real data goes through the same pipeline.

* Anthropic HH-RLHF: ``{"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": …}``,
  possibly multi-turn. The prompt is the shared conversation up to and including
  the last ``"\\n\\nAssistant:"``; the two responses are what follows it.
* OpenAI summarize-from-feedback comparisons: ``{"info": {"post", "title"?,
  "subreddit"?}, "summaries": [{"text"}, {"text"}], "choice", "worker"?}``. The
  prompt is the post in the paper's ``SUBREDDIT / TITLE / POST / TL;DR:`` layout.
"""

from __future__ import annotations

from rlhf_jax.data.records import Comparison, Line, parse_file

ASSISTANT = "\n\nAssistant:"


def _hh_rlhf(line: Line) -> Comparison:
    chosen, rejected = line.text("chosen"), line.text("rejected")
    cut = chosen.rfind(ASSISTANT)
    if cut < 0:
        line.fail("chosen", f"no {ASSISTANT!r} turn")
    prompt = chosen[:cut + len(ASSISTANT)]
    if not rejected.startswith(prompt):
        line.fail("rejected", "does not continue the conversation of 'chosen'")
    responses = (chosen[len(prompt):].strip(), rejected[len(prompt):].strip())
    for field, response in zip(("chosen", "rejected"), responses):
        if not response:
            line.fail(field, "empty response after the last Assistant turn")
    return Comparison(prompt.lstrip("\n"), responses, (0, 1))


def _summarize_from_feedback(line: Line) -> Comparison:
    info = line.obj.get("info")
    if not isinstance(info, dict):
        line.fail("info", "missing or not an object")
    parts = [f"SUBREDDIT: r/{info['subreddit']}"] if info.get("subreddit") else []
    parts += [f"TITLE: {info['title']}"] if info.get("title") else []
    parts += [f"POST: {Line(info, line.where).text('post').strip()}", "TL;DR:"]
    summaries = line.obj.get("summaries")
    if not isinstance(summaries, list) or len(summaries) != 2:
        line.fail("summaries", "expected a list of two {'text': ...} objects")
    texts = tuple(Line(s, f"{line.where}: summaries[{i}]").text("text").strip()
                  for i, s in enumerate(summaries))
    choice = line.obj.get("choice")
    if choice not in (0, 1) or isinstance(choice, bool):
        line.fail("choice", f"expected 0 or 1, got {choice!r}")
    return Comparison("\n".join(parts), texts, (choice, 1 - choice), line.ident("worker"))


def read_hh_rlhf(path: str, on_error: str = "raise"):
    """HH-RLHF JSON lines → ``(comparisons with K = 2, ReadReport)``."""
    return parse_file(path, _hh_rlhf, on_error)


def read_summarize_from_feedback(path: str, on_error: str = "raise"):
    """summarize-from-feedback comparison JSON lines → ``(comparisons, ReadReport)``."""
    return parse_file(path, _summarize_from_feedback, on_error)
