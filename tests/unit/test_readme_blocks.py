"""tests/readme_blocks.py: how README blocks are found, split, filled and compared."""

from __future__ import annotations

import pytest

from tests import readme_blocks

README = """# title

<!-- readme-test: dev -->
```sh
hourglass schedule --every 2s -- echo hello   # prints the job id
hourglass logs <run> [-f]
grpcurl -d '{"a": 1}' \\
  127.0.0.1:50051 x/Y   # a comment
# a comment line
```

## Output

<!-- readme-test: output hourglass status -->

```
job:   985a11eb-b5ce-45af-b5ad-3736b7c7e79f
...
RUN  TOOK
```

```sh
make dev
```
"""


def test_blocks_carry_their_marker_heading_and_line() -> None:
    dev, output, bare = readme_blocks.blocks(README)
    assert (dev.kind, dev.heading, dev.line, dev.info) == ("dev", "title", 4, "sh")
    assert (output.kind, output.argument, output.heading) == (
        "output",
        "hourglass status",
        "Output",
    )
    assert bare.kind is None


def test_an_unmarked_block_is_a_problem_that_says_how_to_mark_it() -> None:
    wrong = readme_blocks.problems(readme_blocks.blocks(README))
    assert (
        len(wrong) == 1 and "<!-- readme-test: dev -->" in wrong[0] and "README.md:22" in wrong[0]
    )
    assert readme_blocks.problems(readme_blocks.blocks("<!-- readme-test: skip -->\n```\nx\n```"))


def test_commands_join_continuations_and_drop_comments() -> None:
    dev = readme_blocks.blocks(README)[0]
    found = readme_blocks.commands(dev)
    assert [c.text for c in found] == [
        "hourglass schedule --every 2s -- echo hello",
        "hourglass logs <run> [-f]",
        """grpcurl -d '{"a": 1}' 127.0.0.1:50051 x/Y""",
    ]
    assert found[0].comment == "prints the job id" and found[2].line == 7


def test_a_hash_inside_quotes_is_not_a_comment() -> None:
    assert readme_blocks.split_comment("echo 'a # b' # c") == ("echo 'a # b'", "c")


def test_substitute_fills_placeholders_literals_and_optional_flags() -> None:
    filled = readme_blocks.substitute(
        "hourglass logs <run> [-f] --server 127.0.0.1:50051",
        literals={"127.0.0.1:50051": "127.0.0.1:4000"},
        values={"run": "r1"},
    )
    assert filled == "hourglass logs r1 -f --server 127.0.0.1:4000"
    with pytest.raises(KeyError, match="<job id>"):
        readme_blocks.substitute("hourglass status <job id>", literals={}, values={})


def test_shapes_compare_ids_times_and_durations_by_kind() -> None:
    sample = "job:  985a11eb-b5ce-45af-b5ad-3736b7c7e79f\n...\nRUN  TOOK\nx  0.00s"
    real = "job:   0d4c0d4c-b5ce-45af-b5ad-3736b7c7e79f\nname: n\nRUN      TOOK\nx  12.31s\n"
    assert readme_blocks.unmatched(sample, real) == []
    assert readme_blocks.unmatched("RUN  TOOK\n23a12fba  0.1s", real) == ["23a12fba <seconds>"]


def test_claims_become_patterns_and_an_unknown_claim_is_refused() -> None:
    job = readme_blocks.claim("prints the job id")
    assert job and job.pattern.search("985a11eb-b5ce-45af-b5ad-3736b7c7e79f\n")
    quoted = readme_blocks.claim('prints "lb: gRPC 127.0.0.1:50061"')
    assert quoted and quoted.pattern.search("  lb: gRPC 127.0.0.1:41234, more")
    columns = readme_blocks.claim("NAME, NEXT FIRE, AGE")
    assert columns and columns.pattern.search("NAME   NEXT FIRE   AGE\nhello  x  1s\n")
    assert readme_blocks.claim("the job and its runs") is None
    with pytest.raises(ValueError, match="CLAIMS"):
        readme_blocks.claim("prints a poem")
