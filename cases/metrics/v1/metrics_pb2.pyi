from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Label(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Series(_message.Message):
    __slots__ = ("labels", "timestamps_ms", "values")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    timestamps_ms: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., timestamps_ms: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class SendMetricsRequest(_message.Message):
    __slots__ = ("series",)
    SERIES_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[Series]
    def __init__(self, series: _Optional[_Iterable[_Union[Series, _Mapping]]] = ...) -> None: ...

class SendMetricsResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class LogStream(_message.Message):
    __slots__ = ("labels", "timestamps_ns", "lines")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_NS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    timestamps_ns: _containers.RepeatedScalarFieldContainer[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., timestamps_ns: _Optional[_Iterable[int]] = ..., lines: _Optional[_Iterable[str]] = ...) -> None: ...

class SendLogsRequest(_message.Message):
    __slots__ = ("streams",)
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[LogStream]
    def __init__(self, streams: _Optional[_Iterable[_Union[LogStream, _Mapping]]] = ...) -> None: ...

class SendLogsResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class FetchDatasetRequest(_message.Message):
    __slots__ = ("selector", "series_id", "start_ms", "end_ms", "step_ms")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    STEP_MS_FIELD_NUMBER: _ClassVar[int]
    selector: str
    series_id: int
    start_ms: int
    end_ms: int
    step_ms: int
    def __init__(self, selector: _Optional[str] = ..., series_id: _Optional[int] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., step_ms: _Optional[int] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("series_id", "labels", "timestamps_ms", "values", "min", "max", "count")
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    series_id: int
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    timestamps_ms: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    min: _containers.RepeatedScalarFieldContainer[float]
    max: _containers.RepeatedScalarFieldContainer[float]
    count: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, series_id: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., timestamps_ms: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., min: _Optional[_Iterable[float]] = ..., max: _Optional[_Iterable[float]] = ..., count: _Optional[_Iterable[int]] = ...) -> None: ...

class FetchDatasetResponse(_message.Message):
    __slots__ = ("datasets", "resolution_s")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_S_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    resolution_s: int
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., resolution_s: _Optional[int] = ...) -> None: ...

class FetchLogsRequest(_message.Message):
    __slots__ = ("selector", "start_ns", "end_ns", "limit")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    START_NS_FIELD_NUMBER: _ClassVar[int]
    END_NS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    selector: str
    start_ns: int
    end_ns: int
    limit: int
    def __init__(self, selector: _Optional[str] = ..., start_ns: _Optional[int] = ..., end_ns: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class FetchLogsResponse(_message.Message):
    __slots__ = ("streams",)
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[LogStream]
    def __init__(self, streams: _Optional[_Iterable[_Union[LogStream, _Mapping]]] = ...) -> None: ...

class CompactRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ("partitions", "files_merged", "duplicates_dropped")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    FILES_MERGED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    partitions: int
    files_merged: int
    duplicates_dropped: int
    def __init__(self, partitions: _Optional[int] = ..., files_merged: _Optional[int] = ..., duplicates_dropped: _Optional[int] = ...) -> None: ...

class DownsampleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DownsampleResponse(_message.Message):
    __slots__ = ("rollups_written",)
    ROLLUPS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    rollups_written: int
    def __init__(self, rollups_written: _Optional[int] = ...) -> None: ...

class EnforceRetentionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnforceRetentionResponse(_message.Message):
    __slots__ = ("files_deleted", "series_forgotten")
    FILES_DELETED_FIELD_NUMBER: _ClassVar[int]
    SERIES_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    files_deleted: int
    series_forgotten: int
    def __init__(self, files_deleted: _Optional[int] = ..., series_forgotten: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("series", "streams")
    SERIES_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[Series]
    streams: _containers.RepeatedCompositeFieldContainer[LogStream]
    def __init__(self, series: _Optional[_Iterable[_Union[Series, _Mapping]]] = ..., streams: _Optional[_Iterable[_Union[LogStream, _Mapping]]] = ...) -> None: ...
