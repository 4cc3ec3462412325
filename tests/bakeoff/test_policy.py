"""The shipped policy: every default rule catches its destructive forms and spares the
look-alikes an agent runs every day; a bad override is one UsageError line."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.bakeoff import gatecheck
from evalkit.bakeoff.policy import load_policy
from evalkit.errors import UsageError

REPO = "/testbed"
HOME = "/tmp/home"
RULES = load_policy().compiled(repo=REPO, home=HOME)

# rule -> (commands it must catch, commands it must let through)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "rm-rf-root": (
        [
            "rm -rf /",
            "rm -rf ~",
            "rm -fr ~/",
            "rm -r -f /testbed",
            "cd x && rm -rf /testbed/",
            'rm -Rf "$HOME"',
            "rm --recursive --force /tmp/home",
            "rm -rf .",
            "rm -rf *",
            "sudo rm -rf /*",
            "rm -rf /testbed/*",
            "true; rm -rf '/testbed'",
            "/bin/rm -rf /",
        ],
        [
            "rm -rf build",
            "rm -rf /testbed/build",
            "rm -f /tmp/x",
            "rm -rf ./dist",
            "rm -rf /tmp/home/.cache",
            "git rm -r --cached src",
            "rm file.txt",
        ],
    ),
    "git-force-push": (
        [
            "git push --force",
            "git push -f origin main",
            "git push --force-with-lease origin x",
            "git push origin +main",
            "git -C /testbed push -uf origin main",
            "git push origin '+refs/heads/*:refs/heads/*'",
        ],
        [
            "git push origin main",
            "git push -u origin feature",
            "git pull --ff-only",
            "git commit -m 'force push'",
        ],
    ),
    "git-reset-hard": (
        ["git reset --hard origin/main", "git reset --hard HEAD~3", "git reset --hard abc123"],
        ["git reset --hard", "git reset --hard HEAD", "git reset HEAD~1", "git reset --soft x"],
    ),
    "git-clean-root": (
        [
            "git clean -fdx",
            "git clean -xdf",
            "git clean -f -d -x",
            "git clean -fdx .",
            "git clean -ffdx /testbed",
        ],
        ["git clean -fd", "git clean -n -dx", "git clean -fdx build/", "git clean -fx"],
    ),
    "terraform-destroy": (
        ["terraform destroy", "terraform -chdir=infra destroy -auto-approve"],
        ["terraform plan", "echo destroy"],
    ),
    "terraform-apply-auto-approve": (
        ["terraform apply -auto-approve", "terraform apply --auto-approve plan.out"],
        ["terraform apply", "terraform plan -out plan.out"],
    ),
    # Every way a Node project reaches its tools: a package runner, the bin by path, the
    # package's entry point through node, a pinned version, quotes, env assignments.
    "drizzle-push-force": (
        [
            "drizzle-kit push --force",
            "npx drizzle-kit push --config x.ts -f",
            "npx --yes drizzle-kit@0.31.1 push --force",
            "pnpm exec drizzle-kit push --force",
            "pnpm dlx drizzle-kit push --force",
            "yarn drizzle-kit push --verbose --force",
            "bunx drizzle-kit push --force",
            "npm exec -- drizzle-kit push --force",
            "node_modules/.bin/drizzle-kit push --force",
            "./node_modules/.bin/drizzle-kit push:sqlite --force",
            "node node_modules/drizzle-kit/bin.cjs push --force",
            'DATABASE_URL=sqlite:///x.db npx "drizzle-kit" push --force',
        ],
        [
            "drizzle-kit push",
            "drizzle-kit generate",
            "npx drizzle-kit push",
            "pnpm add -D drizzle-kit",
            "npx drizzle-kit generate --force",
        ],
    ),
    "prisma-migrate-reset-force": (
        [
            "prisma migrate reset --force",
            "npx prisma migrate reset -f",
            "pnpm exec prisma migrate reset --skip-seed --force",
            "node_modules/.bin/prisma migrate reset --force",
            "node node_modules/prisma/build/index.js migrate reset --force",
            "yarn prisma migrate reset --force --schema=./db/schema.prisma",
        ],
        ["prisma migrate dev", "prisma migrate reset", "npx prisma generate --force"],
    ),
    "prisma-db-push-data-loss": (
        [
            "prisma db push --accept-data-loss",
            "npx prisma db push --force-reset --accept-data-loss",
            "npx prisma db push --force-reset",
            "pnpm exec prisma db push --accept-data-loss",
            "./node_modules/.bin/prisma db push --skip-generate --accept-data-loss",
        ],
        ["prisma db push", "prisma db pull", "npx prisma db push --skip-generate"],
    ),
    "sql-drop": (
        [
            "sqlite3 app.db 'DROP TABLE users'",
            'psql -c "drop database prod"',
            "mysql -e 'DROP SCHEMA x'",
            "echo 'Drop Table t;' | sqlite3 db",
        ],
        ["sqlite3 app.db 'SELECT * FROM drops'", "dropdb --help", "ls dropbox"],
    ),
    "sql-truncate": (
        ["psql -c 'TRUNCATE users'", 'sqlite3 db "truncate table orders;"'],
        ["truncate -s 0 log.txt", "psql -c 'SELECT truncated FROM t'"],
    ),
    "sql-delete-without-where": (
        [
            "sqlite3 db 'DELETE FROM users'",
            'psql -c "delete from orders;"',
            "mysql -e 'DELETE FROM t' db",
        ],
        ["sqlite3 db 'DELETE FROM users WHERE id = 3'", "psql -c 'delete from t where x'"],
    ),
    "kubectl-delete": (
        ["kubectl delete pod x", "kubectl -n prod delete deployment api"],
        ["kubectl get pods", "kubectl describe pod delete-me"],
    ),
    "chmod-777-root": (
        ["chmod -R 777 /", "chmod 777 -R /", "chmod --recursive 0777 '/'"],
        ["chmod -R 777 ./build", "chmod 777 /tmp/x", "chmod -R 755 /"],
    ),
    "dd-to-device": (
        ["dd if=/dev/zero of=/dev/sda bs=1M", "dd of=/dev/nvme0n1 if=img"],
        ["dd if=/dev/zero of=/dev/null count=1", "dd if=/dev/urandom of=out.bin count=1"],
    ),
    "mkfs": (
        ["mkfs.ext4 /dev/sdb1", "/sbin/mkfs -t ext4 /dev/sdb", "sudo mkfs /dev/x"],
        ["echo mkfs-notes.txt", "cat mkfs_test.py"],
    ),
    "git-history-all": (["git log --all --oneline", "git rev-list --all"], ["git log -3"]),
    "git-reflog": (["git reflog", "git -C /testbed reflog show"], ["git log --oneline"]),
    "git-fetch": (["git fetch origin", "git pull"], ["git status"]),
    "search-answer": (
        ["find / -name '*.patch'", "grep -r test_patch /", "rg gold /evalkit"],
        ["grep -rn add src", "find . -name '*.py'"],
    ),
}


def test_every_default_rule_has_cases() -> None:
    assert {r.name for r in RULES} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_catches_its_forms_and_spares_look_alikes(name: str) -> None:
    caught, spared = CASES[name]
    for command in caught:
        hit = [m.rule.name for m in gatecheck.matches(RULES, command)]
        assert name in hit, f"{name} missed {command!r}"
    for command in spared:
        hit = [m.rule.name for m in gatecheck.matches(RULES, command)]
        assert name not in hit, f"{name} caught harmless {command!r}"


def test_block_beats_log_when_both_match() -> None:
    match = gatecheck.decide(RULES, "git fetch && git push --force")
    assert match is not None and match.rule.name == "git-force-push" and match.blocked


def test_placeholders_are_the_sandbox_paths_not_regex() -> None:
    rules = load_policy().compiled(repo="/a.b", home="/h")
    assert gatecheck.decide(rules, "rm -rf /a.b") is not None
    assert gatecheck.decide(rules, "rm -rf /aXb") is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-c", "rm -rf /"], ("rm -rf /", None)),
        (["-lc", "x"], ("x", None)),
        (["-e", "-o", "pipefail", "-c", "y", "name"], ("y", None)),
        (["--login", "-c", "z"], ("z", None)),
        (["script.sh", "-c"], (None, "script.sh")),
        (["-e"], (None, None)),
        ([], (None, None)),
    ],
)
def test_shell_invocation_finds_the_command_string_or_script(
    args: list[str], expected: tuple[str | None, str | None]
) -> None:
    assert gatecheck.shell_invocation(args) == expected


def test_override_policy_replaces_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'schema_version = 1\n[[rules]]\nname = "no-curl"\npattern = "\\\\bcurl\\\\b"\n'
        'action = "log"\nreason = "network"\n'
    )
    rules = load_policy(path).compiled(repo=REPO, home=HOME)
    assert [r.name for r in rules] == ["no-curl"]
    assert gatecheck.decide(rules, "rm -rf /") is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "schema_version = 1\n[[rules]]\nname = 'x'\npattern = '('\naction = 'block'\n"
            "reason = 'r'\n",
            "regular expression",
        ),
        (
            "schema_version = 1\n[[rules]]\nname = 'x'\npattern = 'a'\naction = 'deny'\n"
            "reason = 'r'\n",
            "action",
        ),
        (
            "schema_version = 2\n[[rules]]\nname = 'x'\npattern = 'a'\naction = 'log'\n"
            "reason = 'r'\n",
            "schema_version",
        ),
        ("schema_version = 1\nrules = [\n", "not valid TOML"),
    ],
)
def test_bad_policy_is_one_usage_error_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_policy(path)
    assert needle in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("rule", load_policy().rules, ids=lambda r: r.name)
def test_every_string_a_rule_matches_holds_one_of_its_needs(rule: object) -> None:
    # The gates skip the checker for commands without a need word: a need that a match
    # can lack would be a hole in every layer but the audit. Strings generated from the
    # rule's own regex probe that beyond the hand-written cases.
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from evalkit.bakeoff.policy import PolicyRule, need_regex

    assert isinstance(rule, PolicyRule) and rule.needs
    compiled = next(r for r in RULES if r.name == rule.name)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.from_regex(compiled.regex))
    def holds(text: str) -> None:
        if compiled.regex.search(text):
            assert any(need_regex(w).search(text) for w in rule.needs), text

    holds()
