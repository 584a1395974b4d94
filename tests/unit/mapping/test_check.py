"""check: the spec against source and target catalogs, one located problem per finding."""

from __future__ import annotations

import copy
import dataclasses

from replicator.core.mapping import Catalog, Problem, catalog_from_dict, check, load_spec, load_spec_text
from replicator.core.model import TableRef
from tests.unit.mapping.demo_catalogs import DEMO_SPEC, SOURCE, TARGET, CatalogSpec, TableSpec


def errors(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems if p.severity == "error"]


def test_demo_mapping_checks_clean(source_catalog: Catalog, target_catalog: Catalog) -> None:
    """demo: mappings/demo.yaml passes check against the demo catalogs (only the FK info)."""
    problems = check(load_spec(DEMO_SPEC), source_catalog, target_catalog)
    assert [p.severity for p in problems] == ["info"], [str(p) for p in problems]
    assert "crm.customer, crm.customer_pii" in problems[0].message


def run(
    columns: str,
    *,
    src: CatalogSpec | None = None,
    tgt: CatalogSpec | None = None,
    extra: str = "    unmapped_source_columns: ignore\n",
) -> list[Problem]:
    text = f"""\
version: 1
topic_prefix: demo
tables:
  - id: t
    source: s.a
    target: s.b
    key: {{id: id}}
    delete: {{policy: hard}}
    truncate: {{policy: ignore}}
{extra}    columns:
{columns}
"""
    if src is None:
        src = {
            "s.a": {
                "columns": {"id": "bigint", "v": "text", "n": "numeric(12,2)", "i": "bigint"},
                "pk": ["id"],
            }
        }
    if tgt is None:
        tgt = {
            "s.b": {
                "columns": {
                    "id": "bigint",
                    "v": "varchar(10)",
                    "n": "numeric(8,2)",
                    "i": "integer",
                    "w": "integer",
                },
                "pk": ["id"],
            }
        }
    return check(load_spec_text(text, "m.yaml"), catalog_from_dict(src), catalog_from_dict(tgt))


def test_narrowing_without_cast_text_numeric_integer() -> None:
    """check narrowing: text->varchar(10), numeric(12,2)->numeric(8,2), bigint->integer."""
    msgs = errors(run("      v: {from: v}\n      n: {from: n}\n      i: {from: i}"))
    assert msgs == [
        "m.yaml:12: t.v: value of type text may not fit varchar(10) (narrowing); fix: declare "
        "cast: {on_narrowing: reject} (or truncate for strings), or widen the target",
        "m.yaml:13: t.n: value of type numeric(12,2) may not fit numeric(8,2) (narrowing); fix: "
        "declare cast: {on_narrowing: reject} (or truncate for strings), or widen the target",
        "m.yaml:14: t.i: value of type bigint may not fit integer (narrowing); fix: declare "
        "cast: {on_narrowing: reject} (or truncate for strings), or widen the target",
    ]


def test_narrowing_with_cast_is_fine() -> None:
    """check narrowing: a declared cast.on_narrowing satisfies the check."""
    cols = (
        "      v: {from: v, cast: {on_narrowing: truncate}}\n"
        "      n: {from: n, cast: {on_narrowing: reject}}\n"
        "      i: {from: i, cast: {on_narrowing: reject}}"
    )
    assert errors(run(cols)) == []


def test_incompatible_type_text_to_integer() -> None:
    """check types: text -> integer needs a cast (which parses integers)."""
    assert (
        "does not convert to integer"
        in errors(run("      w: {from: v}\n      v: {from: v, cast: {on_narrowing: truncate}}"))[0]
    )
    assert (
        errors(
            run(
                "      w: {from: v, cast: {on_narrowing: reject}}\n"
                "      v: {from: v, cast: {on_narrowing: reject}}"
            )
        )
        == []
    )


def test_unknown_source_and_target_columns_and_tables() -> None:
    """check: unknown source/target tables and columns name the rule and the fix."""
    msgs = errors(run("      nope: {from: v}\n      v: {from: gone, cast: {on_narrowing: reject}}"))
    assert any("t.nope: target column 'nope' does not exist" in m for m in msgs)
    assert any("t.v: source column 'gone' does not exist" in m for m in msgs)
    msgs = errors(run("      v: {from: v}", src={}, tgt={}))
    assert msgs[0].startswith("m.yaml:5: t: source table s.a does not exist")
    assert msgs[1].startswith("m.yaml:6: t: target table s.b does not exist")


def test_a_generated_target_column_is_never_written() -> None:
    """check (t.w): a stored generated target column refuses a written value; unmapped it is fine."""
    tgt: CatalogSpec = {
        "s.b": {"columns": {"id": "bigint", "v": "text", "w": "integer generated"}, "pk": ["id"]}
    }
    (msg,) = errors(run("      v: {from: v}\n      w: {from: i, cast: {on_narrowing: reject}}", tgt=tgt))
    assert "t.w: target column 'w' of s.b is a generated column: PostgreSQL computes it" in msg
    assert errors(run("      v: {from: v}", tgt=tgt)) == []


def test_a_generated_source_column_is_refused_its_values_never_stream() -> None:
    """check (t.w): logical replication does not carry a generated source column."""
    src: CatalogSpec = {
        "s.a": {"columns": {"id": "bigint", "v": "text", "g": "integer generated"}, "pk": ["id"]}
    }
    (msg,) = errors(run("      v: {from: v, cast: {on_narrowing: truncate}}\n      w: {from: g}", src=src))
    assert "t.w: source column 'g' of s.a is a generated column: logical replication" in msg
    assert "list 'g' under ignore_source_columns" in msg


def test_a_bit_varying_target_is_refused_debezium_drops_leading_zero_bits() -> None:
    src: CatalogSpec = {"s.a": {"columns": {"id": "bigint", "b": "bit varying"}, "pk": ["id"]}}
    tgt: CatalogSpec = {"s.b": {"columns": {"id": "bigint", "w": "bit varying"}, "pk": ["id"]}}
    (problem,) = [p for p in run("      w: {from: b}", src=src, tgt=tgt) if p.severity != "info"]
    assert problem.severity == "warning"  # each value is an error record at run time, naming why
    assert "t.w: target column 'w' is bit varying: Debezium drops a value's leading zero bits" in str(problem)


def test_a_source_column_debezium_does_not_carry_is_refused() -> None:
    """check (t.w): a type Debezium leaves out of its events (box, interval[]) would stop the table
    at its first event; a name column would be written NULL by every streamed event."""
    src: CatalogSpec = {
        "s.a": {
            "columns": {"id": "bigint", "v": "varchar(10)", "b": "box", "iv": "interval[]", "n": "name"},
            "pk": ["id"],
        }
    }
    for column, why in (
        ("b", "is box: Debezium's PostgreSQL connector leaves box columns out of its change events"),
        ("iv", "is interval[]: Debezium's PostgreSQL connector leaves interval[] columns out"),
        ("n", "is name: Debezium's streamed change events carry null for name columns"),
    ):
        msgs = [
            m
            for m in errors(run(f"      v: {{from: v}}\n      w: {{from: {column}}}", src=src))
            if "source column" in m
        ]
        assert len(msgs) == 1 and f"t.w: source column '{column}' of s.a {why}" in msgs[0], msgs
        assert f"list '{column}' under ignore_source_columns" in msgs[0]
    assert errors(run("      v: {from: v}", src=src)) == []  # not read: nothing to refuse


def test_target_key_must_be_pk_or_unique() -> None:
    """check key (t.key): target key columns must be the PK or a unique constraint."""
    tgt: CatalogSpec = {"s.b": {"columns": {"id": "bigint", "v": "text"}}}
    msgs = errors(run("      v: {from: v}", tgt=tgt))
    assert any(": t.key: target key ['id'] is neither the primary key nor a unique" in m for m in msgs)
    tgt = {"s.b": {"columns": {"id": "bigint", "v": "text"}, "unique": [["id"]]}}
    assert errors(run("      v: {from: v}", tgt=tgt)) == []


def test_source_without_pk_or_identity() -> None:
    """check: a source table without PK or replica identity cannot be keyed."""
    src: CatalogSpec = {"s.a": {"columns": {"id": "bigint", "v": "text"}}}
    msgs = errors(
        run(
            "      v: {from: v}",
            src=src,
            tgt={"s.b": {"columns": {"id": "bigint", "v": "text"}, "pk": ["id"]}},
        )
    )
    assert any("has no primary key or replica identity" in m for m in msgs)


def test_source_without_pk_needs_unique_key_sources() -> None:
    """check key (t.key): a source table without a primary key (replica identity full) is keyed
    only on a unique constraint of it; otherwise equal source rows would collapse."""
    tgt: CatalogSpec = {"s.b": {"columns": {"id": "bigint", "v": "text"}, "pk": ["id"]}}
    src: CatalogSpec = {"s.a": {"columns": {"id": "bigint", "v": "text"}, "replica_identity": "full"}}
    msgs = errors(run("      v: {from: v}", src=src, tgt=tgt))
    assert any(
        ": t.key: source table s.a has no primary key, and the key sources ['id'] are not a unique" in m
        for m in msgs
    ), msgs
    src = {"s.a": {"columns": {"id": "bigint", "v": "text"}, "replica_identity": "full", "unique": [["id"]]}}
    assert errors(run("      v: {from: v}", src=src, tgt=tgt)) == []


def test_not_null_target_without_rule() -> None:
    """check: a NOT NULL target column without default that no rule writes."""
    tgt: CatalogSpec = {
        "s.b": {"columns": {"id": "bigint", "v": "text", "must": "text not null"}, "pk": ["id"]}
    }
    msgs = errors(run("      v: {from: v}", tgt=tgt))
    assert any("target column 'must' is NOT NULL, has no default" in m for m in msgs)


def test_a_nullable_source_column_into_a_not_null_target_without_default_is_a_warning() -> None:
    """Trial 18: 39 rows with a NULL email became error records (23502) that `mapping check`
    never mentioned. A rule's `default:` (or a nullable target) settles it; a target DEFAULT does
    not (the NULL is written)."""
    tgt: CatalogSpec = {
        "s.b": {"columns": {"id": "bigint", "v": "text not null", "n": "numeric(12,2)"}, "pk": ["id"]}
    }
    problems = run("      v: {from: v}\n      n: {from: n}", tgt=tgt)
    said = [str(p) for p in problems if p.severity == "warning"]
    assert said == [
        "m.yaml:12: t.v: source column 'v' of s.a may be NULL and target column 'v' is NOT NULL: a row"
        " with a NULL there is an error record (23502; the target's own DEFAULT does not apply to a NULL"
        " written); fix: give the rule a default (default: <value>), make 'v' nullable in the target,"
        " or fill the source's NULLs"
    ], said
    defaulted = run("      v: {from: v, default: '-'}\n      n: {from: n}", tgt=tgt)
    assert not [p for p in defaulted if p.severity == "warning"]
    src: CatalogSpec = {
        "s.a": {"columns": {"id": "bigint", "v": "text not null", "n": "numeric(12,2)"}, "pk": ["id"]}
    }
    assert not [
        p for p in run("      v: {from: v}\n      n: {from: n}", src=src, tgt=tgt) if p.severity == "warning"
    ]


def test_unmapped_source_columns_fail_and_ignore() -> None:
    """check unmapped_source_columns: fail lists unmapped columns; ignore lists silence them."""
    tgt: CatalogSpec = {"s.b": {"columns": {"id": "bigint", "v": "text"}, "pk": ["id"]}}
    msgs = errors(run("      v: {from: v}", tgt=tgt, extra=""))
    assert sorted(m.split(": ")[2] for m in msgs) == [
        "source column 'i' is not mapped (unmapped_source_columns",
        "source column 'n' is not mapped (unmapped_source_columns",
    ]
    assert errors(run("      v: {from: v}", tgt=tgt, extra="    ignore_source_columns: [n, i]\n")) == []
    assert errors(run("      v: {from: v}", tgt=tgt, extra="    unmapped_source_columns: ignore\n")) == []


def test_problem_str_format() -> None:
    """check Problem: str is 'file:line: rule_id: what; fix: how'."""
    p = Problem("m.yaml", 3, "t.v", "bad", "do this")
    assert str(p) == "m.yaml:3: t.v: bad; fix: do this"


def test_enum_label_missing_from_value_map_is_warning(
    source_catalog: Catalog, target_catalog: Catalog
) -> None:
    """check value_map unmapped reject: enum labels absent from the map are flagged."""
    text = DEMO_SPEC.read_text().replace("gold: G, platinum: P", "gold: G")
    problems = check(load_spec_text(text, "d.yaml"), source_catalog, target_catalog)
    warn = [str(p) for p in problems if p.severity == "warning"]
    assert any("customer.tier_code: enum labels ['platinum']" in w for w in warn)


def test_demo_catalog_drift_is_caught() -> None:
    """check: the demo spec against a source that grew a column fails (unmapped: fail)."""
    src = copy.deepcopy(SOURCE)
    src["shop.products"]["columns"]["colour"] = "text"
    problems = check(load_spec(DEMO_SPEC), catalog_from_dict(src), catalog_from_dict(TARGET))
    assert any("product: source column 'colour' is not mapped" in m for m in errors(problems))


CYCLE_SPEC = """\
version: 1
topic_prefix: demo
tables:
  - id: team
    source: s.team
    target: t.team
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns: {id: {from: id}, lead: {from: lead}}
  - id: member
    source: s.member
    target: t.member
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: ignore}
    columns: {id: {from: id}, team: {from: team}}
"""


def cycle_catalogs(team_deferrable: bool, member_deferrable: bool) -> tuple[Catalog, Catalog]:
    def tables(schema: str) -> CatalogSpec:
        team: TableSpec = {"columns": {"id": "int not null", "lead": "int"}, "pk": ["id"]}
        member: TableSpec = {"columns": {"id": "int not null", "team": "int"}, "pk": ["id"]}
        return {f"{schema}.team": team, f"{schema}.member": member}

    target = tables("t")
    target["t.team"]["fks"] = [
        {
            "columns": ["lead"],
            "references": "t.member",
            "ref_columns": ["id"],
            "name": "team_lead_fk",
            "deferrable": team_deferrable,
        }
    ]
    target["t.member"]["fks"] = [
        {
            "columns": ["team"],
            "references": "t.team",
            "ref_columns": ["id"],
            "name": "member_team_fk",
            "deferrable": member_deferrable,
        }
    ]
    return catalog_from_dict(tables("s")), catalog_from_dict(target)


def test_a_target_fk_cycle_with_an_immediate_constraint_is_a_warning_naming_it() -> None:
    """Trial 5: a two-table cycle written in one source transaction stays held forever when a
    constraint of the cycle is NOT DEFERRABLE in the target; check says so (a warning: a source
    whose own constraints are immediate writes such rows in an order that fits)."""
    spec = load_spec_text(CYCLE_SPEC)
    warned = [p for p in check(spec, *cycle_catalogs(False, True)) if p.severity == "warning"]
    assert len(warned) == 1
    assert "t.member -> t.team -> t.member" in warned[0].message or "t.team -> t.member" in warned[0].message
    assert "t.team.team_lead_fk" in warned[0].message and "member_team_fk" not in warned[0].message
    assert "DEFERRABLE INITIALLY DEFERRED" in warned[0].fix
    deferred = check(spec, *cycle_catalogs(True, True))
    assert [p for p in deferred if p.severity == "warning"] == []


SAAS_SPEC = """\
version: 1
topic_prefix: saas
tables:
  - id: board
    source: s.boards
    target: t.boards
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: error}
    columns:
      slug: {from: slug}
  - id: card
    source: s.cards
    target: t.cards
    key: {id: id}
    delete: {policy: hard}
    truncate: {policy: error}
    columns:
      board_id: {from: board_id}
"""


def saas_catalogs(
    *, source_deferrable: bool, target_deferrable: bool, cascades: bool, on_slug: bool = False
) -> tuple[Catalog, Catalog]:
    """boards (a unique slug) <- cards, the same in source and target but for the slug's
    deferrability and the target FK's ON DELETE CASCADE (`on_slug`: the target FK references the
    slug, not the key)."""

    def tables(schema: str, deferrable: bool, fk_cascades: bool) -> CatalogSpec:
        return {
            f"{schema}.boards": {
                "columns": {"id": "bigint", "slug": "text not null"},
                "pk": ["id"],
                "unique": [["slug"]],
                "deferrable_unique": [["slug"]] if deferrable else [],
            },
            f"{schema}.cards": {
                "columns": {"id": "bigint", "board_id": "bigint not null"},
                "pk": ["id"],
                "fks": [
                    {
                        "columns": ["board_id"],
                        "references": f"{schema}.boards",
                        "ref_columns": ["slug" if on_slug and schema == "t" else "id"],
                        "name": "cards_board_fk",
                        "cascades": fk_cascades,
                    }
                ],
            },
        }

    return (
        catalog_from_dict(tables("s", source_deferrable, True)),
        catalog_from_dict(tables("t", target_deferrable, cascades)),
    )


def test_a_not_deferrable_target_unique_behind_a_deferrable_source_one_is_a_warning() -> None:
    """Trial 10: the source swapped two boards' slugs in one UPDATE (its unique DEFERRABLE); the
    target's NOT DEFERRABLE unique refused both rows in either order and they stayed held, so
    `drain` timed out. check says so, with the fix; a deferrable target, or a source whose own
    unique is immediate (it cannot swap in one statement), gets no warning."""
    spec = load_spec_text(SAAS_SPEC)
    warned = [
        p
        for p in check(spec, *saas_catalogs(source_deferrable=True, target_deferrable=False, cascades=False))
        if p.severity == "warning"
    ]
    assert len(warned) == 1 and warned[0].rule_id == "board"
    assert "unique constraint on (slug) of t.boards is NOT DEFERRABLE" in warned[0].message
    assert "DEFERRABLE INITIALLY DEFERRED" in warned[0].fix
    for src_d, tgt_d in ((True, True), (False, False)):
        clean = check(spec, *saas_catalogs(source_deferrable=src_d, target_deferrable=tgt_d, cascades=False))
        assert [p for p in clean if p.severity == "warning"] == []


def test_an_on_delete_cascade_on_another_unique_than_the_parents_key_is_a_warning() -> None:
    """Trial 10: cards moved to another board and the old board deleted in one source
    transaction; the board's delete (its own topic) landed first and the target's ON DELETE
    CASCADE took cards, comments and labels the source kept (393 comments missing, no error
    record). The writer now holds such a delete when the key references the parent's key
    (`test_cascade_deletes.py`): nothing to say. On another unique (the slug) it cannot tell
    which row a delete leaves: check warns with the NO ACTION fix."""
    spec = load_spec_text(SAAS_SPEC)
    catalogs = saas_catalogs(source_deferrable=False, target_deferrable=False, cascades=True, on_slug=True)
    warned = [p for p in check(spec, *catalogs) if p.severity == "warning"]
    assert len(warned) == 1 and warned[0].rule_id == "card"
    assert (
        "cards_board_fk of t.cards is ON DELETE CASCADE from t.boards (slug, not its key)"
        in warned[0].message
    )
    assert "ON DELETE NO ACTION" in warned[0].fix
    assert warned[0].line == spec.line("tables", 1, "target")
    for cascades in (True, False):
        clean = check(
            spec, *saas_catalogs(source_deferrable=False, target_deferrable=False, cascades=cascades)
        )
        assert [p for p in clean if p.severity == "warning"] == []


def test_source_enum_labels_the_target_enum_lacks_are_an_error() -> None:
    """check enum into enum: a label the source's enum has and the target's lacks (trial 11: a
    source `ALTER TYPE ... ADD VALUE` not made in the target) is an error naming the labels and the
    fix; with the label in the target, or the target a superset, nothing."""
    src: CatalogSpec = {"s.a": {"columns": {"id": "bigint", "st": "enum(new,paid,refunded)"}, "pk": ["id"]}}

    def target(labels: str) -> CatalogSpec:
        return {"s.b": {"columns": {"id": "bigint", "st": f"enum({labels})"}, "pk": ["id"]}}

    msgs = errors(run("      st: {from: st}", src=src, tgt=target("new,paid")))
    assert msgs == [
        "m.yaml:12: t.st: enum labels ['refunded'] of the source are not in the enum of target column"
        " 'st': every row with one would be an error record (22P02); fix: add them to the target"
        " column's enum type (ALTER TYPE ... ADD VALUE in the target), before the source writes them"
    ]
    assert errors(run("      st: {from: st}", src=src, tgt=target("new,paid,refunded"))) == []
    assert errors(run("      st: {from: st}", src=src, tgt=target("new,paid,refunded,void"))) == []


def test_a_user_defined_composite_target_column_is_not_told_to_add_a_value_map() -> None:
    """Trial 13: text into a composite-typed target column was told `add a value_map producing the
    target type`, which no value_map can do."""
    spec = load_spec_text(
        "version: 1\ntopic_prefix: demo\ntables:\n  - id: t\n    source: s.a\n    target: s.b\n"
        "    key: {id: id}\n    delete: {policy: hard}\n    truncate: {policy: ignore}\n"
        "    columns: {id: {from: id}, addr: {from: addr}}\n",
        "composite.yaml",
    )
    source = catalog_from_dict({"s.a": {"columns": {"id": "bigint", "addr": "text"}, "pk": ["id"]}})
    plain = catalog_from_dict({"s.b": {"columns": {"id": "bigint", "addr": "s.address"}, "pk": ["id"]}})
    table = plain.tables[TableRef("s", "b")]
    composite = tuple(
        dataclasses.replace(c, type=dataclasses.replace(c.type, user_kind="composite"))
        if c.name == "addr"
        else c
        for c in table.columns
    )
    target = Catalog({table.ref: dataclasses.replace(table, columns=composite)})
    said = errors(check(spec, source, target))
    assert len(said) == 1 and "no rule produces a value of a user-defined composite type" in said[0], said
    assert "value_map" not in said[0]
