import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("key", "weight", "timestamp")
    KEY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    key: str
    weight: int
    timestamp: _timestamp_pb2.Timestamp
    def __init__(self, key: _Optional[str] = ..., weight: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordEventsRequest(_message.Message):
    __slots__ = ("batch_id", "event_type", "events")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    event_type: str
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, batch_id: _Optional[str] = ..., event_type: _Optional[str] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("recorded", "duplicate")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    duplicate: bool
    def __init__(self, recorded: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class FetchLeaderboardRequest(_message.Message):
    __slots__ = ("event_type", "k", "start", "end")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    k: int
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, event_type: _Optional[str] = ..., k: _Optional[int] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("key", "count")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    key: str
    count: int
    def __init__(self, key: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class FetchLeaderboardResponse(_message.Message):
    __slots__ = ("entries", "buckets", "start", "end")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    buckets: int
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., buckets: _Optional[int] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RollupRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollupResponse(_message.Message):
    __slots__ = ("buckets_created", "rolled_until")
    class RolledUntilEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _timestamp_pb2.Timestamp
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
    BUCKETS_CREATED_FIELD_NUMBER: _ClassVar[int]
    ROLLED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    buckets_created: int
    rolled_until: _containers.MessageMap[str, _timestamp_pb2.Timestamp]
    def __init__(self, buckets_created: _Optional[int] = ..., rolled_until: _Optional[_Mapping[str, _timestamp_pb2.Timestamp]] = ...) -> None: ...

class EnforceRetentionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnforceRetentionResponse(_message.Message):
    __slots__ = ("buckets_deleted", "horizon")
    BUCKETS_DELETED_FIELD_NUMBER: _ClassVar[int]
    HORIZON_FIELD_NUMBER: _ClassVar[int]
    buckets_deleted: int
    horizon: _timestamp_pb2.Timestamp
    def __init__(self, buckets_deleted: _Optional[int] = ..., horizon: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
