"""The pure parts of etcd failover: reading the endpoint list, and which transactions may be
sent again to another member."""

from __future__ import annotations

import pytest
from aetcd import rpc

from hourglass.etcd_endpoints import is_read_only, parse_endpoints


def test_every_endpoint_is_kept_in_order_once() -> None:
    assert parse_endpoints("a:2379, http://b:2379,a:2379,,c:1") == ["a:2379", "b:2379", "c:1"]


@pytest.mark.parametrize("text", ["a:2379,b", "a:2379,b:port", ":2379"])
def test_a_bad_endpoint_is_named(text: str) -> None:
    bad = text.split(",")[-1]
    with pytest.raises(ValueError, match=f"etcd endpoint '{bad}': use HOST:PORT"):
        parse_endpoints(text)


def test_an_empty_list_is_refused() -> None:
    with pytest.raises(ValueError, match="none given"):
        parse_endpoints(" , ")


def _range(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def _put(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=b"x"))


def test_only_a_transaction_of_reads_may_be_repeated() -> None:
    assert is_read_only(rpc.TxnRequest(success=[_range(b"a"), _range(b"b")]))
    assert is_read_only(rpc.TxnRequest(success=[_range(b"a")], failure=[_range(b"b")]))
    # A write in either branch may have been applied before its reply was lost.
    assert not is_read_only(rpc.TxnRequest(success=[_range(b"a"), _put(b"b")]))
    assert not is_read_only(rpc.TxnRequest(success=[_range(b"a")], failure=[_put(b"b")]))
    delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=b"a"))
    assert not is_read_only(rpc.TxnRequest(success=[delete]))
