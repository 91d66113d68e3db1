"""Models measured each in its own process, in turns: the benchmarks' way to compare peers on a machine whose speed
drifts over minutes (`benchmarks/peers.py`, `benchmarks/user_models.py`)."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO

ANSWER = "answer: "  # starts the one line of a child's stdout that `Turns` reads as its answer


def serve(handlers: Mapping[str, Callable[[], dict]]) -> None:
    """A child's side of `Turns`: for each word read from stdin, runs its handler and prints the result as one line
    of JSON after `ANSWER` (other output, TensorFlow's or a library's, is skipped by the reader); ends when stdin
    closes."""
    for line in sys.stdin:
        print(ANSWER + json.dumps(handlers[line.strip()]()), flush=True)


class Turns:
    """Models measured each in its own process (fresh XLA caches, its own peak memory) but in turns.

    Every child (`serve`) waits for its next word, so only one runs at a time: round r of every model comes before
    round r + 1 of any, the one going first rotating. Run one after another, each model's rounds fell minutes
    apart from its peer's, and this machine's drift over minutes (same code 0.68-1.51x between processes) landed
    in the ratios; in turns it falls on every model alike. A child that ends (killed for memory, an error) is left
    out from then on, with the last line of its stderr in `failed`.

    >>> echo = "import sys\\nfor word in sys.stdin: print('answer: {\\"%s\\": 1}' % word.strip(), flush=True)"
    >>> with Turns({"a": [sys.executable, "-c", echo], "b": [sys.executable, "-c", echo]}) as turns:
    ...     turns.start("build"), turns.rounds("round", 2)
    ({'a': {'build': 1}, 'b': {'build': 1}}, {'a': [{'round': 1}, {'round': 1}], 'b': [{'round': 1}, {'round': 1}]})
    """

    def __init__(self, commands: Mapping[str, Sequence[str]], env: Mapping[str, str] | None = None) -> None:
        self.commands, self.env = dict(commands), env
        self.children: dict[str, subprocess.Popen] = {}
        self.stderr: dict[str, IO[str]] = {}
        self.failed: dict[str, str] = {}

    def __enter__(self) -> "Turns":
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        for child in self.children.values():
            child.stdin.close()
            if exc_type is not None:  # interrupted: the children may be mid-round
                child.kill()
        for child in self.children.values():
            child.wait()
        for log in self.stderr.values():
            log.close()

    def start(self, word: str) -> dict[str, dict]:
        """Starts the children one at a time, each answering `word` before the next starts (a first step timed
        while no other model runs)."""
        answers = {}
        for label, command in self.commands.items():
            # stderr to a file: TensorFlow's logging could fill a pipe nobody reads and block the child
            self.stderr[label] = tempfile.TemporaryFile("w+")
            self.children[label] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                    stderr=self.stderr[label], text=True, env=self.env)
            if (answer := self.ask(label, word)) is not None:
                answers[label] = answer
        return answers

    def rounds(self, word: str, count: int) -> dict[str, list[dict]]:
        """`count` rounds of `word` in turns, each round led by the next child."""
        answers: dict[str, list[dict]] = {label: [] for label in self.children}
        for first in range(count):
            labels = list(self.children)
            for label in labels[first % len(labels):] + labels[:first % len(labels)]:
                if (answer := self.ask(label, word)) is not None:
                    answers[label].append(answer)
        return answers

    def ask(self, label: str, word: str) -> dict | None:
        """Child `label`'s answer to `word`, or None if it ended (then in `failed` and out of the turns)."""
        child = self.children[label]
        try:
            child.stdin.write(word + "\n")
            child.stdin.flush()
            for line in child.stdout:
                if line.startswith(ANSWER):
                    return json.loads(line[len(ANSWER):])
        except BrokenPipeError:
            pass
        child.wait()
        self.stderr[label].seek(0)
        self.failed[label] = f"exit code {child.returncode}: {self.stderr[label].read().strip().splitlines()[-1:]}"
        del self.children[label]
        return None
