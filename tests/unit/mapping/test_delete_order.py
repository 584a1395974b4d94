"""The order a batch deletes its tables' rows in (`core.mapping.plan.delete_order`): children
before parents, except along ON DELETE CASCADE keys, where the parent goes first (the order a
concurrent cascade locks the rows in: trial 8's deadlocks between two instances), with every table
that must precede a cascaded-into child ahead of the parent too; a cycle falls back to children
first throughout."""

from __future__ import annotations

from replicator.core.mapping.plan import ForeignKeyPlan, delete_order
from replicator.core.model import TableRef

CUST, ORD, LINE, EVENT, NOTE = (TableRef("s", n) for n in ("cust", "ord", "line", "event", "note"))
ORDER = (CUST, ORD, LINE, EVENT, NOTE)  # parents first, as apply_order gives it


def fk(child: TableRef, parent: TableRef, cascades: bool = False) -> ForeignKeyPlan:
    return ForeignKeyPlan(f"{child.name}_fk", child, ("p",), parent, ("id",), cascades=cascades)


def test_without_a_cascading_key_children_go_first() -> None:
    keys = [fk(ORD, CUST), fk(LINE, ORD), fk(EVENT, LINE)]
    assert delete_order(ORDER, keys) == tuple(reversed(ORDER))
    assert delete_order(ORDER, []) == tuple(reversed(ORDER))


def test_a_cascading_key_puts_its_parent_first() -> None:
    keys = [fk(ORD, CUST, True), fk(LINE, ORD, True), fk(EVENT, LINE)]
    # event restricts line's deletes, and cust and ord cascade into line: event goes before both
    assert delete_order(ORDER, keys) == (NOTE, EVENT, CUST, ORD, LINE)


def test_a_cascade_into_a_restricted_table_waits_for_what_restricts_it() -> None:
    keys = [fk(ORD, CUST, True), fk(LINE, ORD), fk(NOTE, CUST)]
    # deleting cust deletes ord rows, which line restricts: line goes before cust; so does note
    assert delete_order(ORDER, keys) == (NOTE, EVENT, LINE, CUST, ORD)


def test_keys_to_unmapped_tables_and_self_references_change_nothing() -> None:
    other = TableRef("s", "other")
    keys = [fk(ORD, other, True), fk(other, LINE, True), fk(ORD, ORD, True)]
    assert delete_order(ORDER, keys) == tuple(reversed(ORDER))


def test_constraints_in_a_cycle_fall_back_to_children_first() -> None:
    keys = [fk(ORD, CUST, True), fk(CUST, ORD)]  # cust before ord, and ord before cust
    assert delete_order(ORDER, keys) == tuple(reversed(ORDER))
