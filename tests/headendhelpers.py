"""Helpers the headend's tests share."""

from __future__ import annotations

from headend.store import HeadendStore


def count_transactions(store: HeadendStore) -> list[int]:
    """A one-item list that counts the transactions ``store`` begins from now on (the
    group commit's tests compare it before and after)."""
    transactions = [0]
    begin = store._begin

    def counting_begin(cur: object, wait: bool = True) -> None:
        transactions[0] += 1
        begin(cur, wait)

    store._begin = counting_begin  # type: ignore[method-assign]
    return transactions
