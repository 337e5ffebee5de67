import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateWorkspaceRequest(_message.Message):
    __slots__ = ("workspace", "user")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    user: str
    def __init__(self, workspace: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class CreateWorkspaceResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class AddMemberRequest(_message.Message):
    __slots__ = ("workspace", "user", "access")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    user: str
    access: str
    def __init__(self, workspace: _Optional[str] = ..., user: _Optional[str] = ..., access: _Optional[str] = ...) -> None: ...

class AddMemberResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class HaveChunksRequest(_message.Message):
    __slots__ = ("workspace", "digests")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, workspace: _Optional[str] = ..., digests: _Optional[_Iterable[str]] = ...) -> None: ...

class HaveChunksResponse(_message.Message):
    __slots__ = ("missing",)
    MISSING_FIELD_NUMBER: _ClassVar[int]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, missing: _Optional[_Iterable[str]] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("digest", "data")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    digest: str
    data: bytes
    def __init__(self, digest: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class PutChunkRequest(_message.Message):
    __slots__ = ("workspace", "chunks")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    def __init__(self, workspace: _Optional[str] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ...) -> None: ...

class PutChunkResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: int
    def __init__(self, stored: _Optional[int] = ...) -> None: ...

class CommitVersionRequest(_message.Message):
    __slots__ = ("workspace", "path", "base_version", "chunks", "digest", "device")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    base_version: int
    chunks: _containers.RepeatedScalarFieldContainer[str]
    digest: str
    device: str
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ..., base_version: _Optional[int] = ..., chunks: _Optional[_Iterable[str]] = ..., digest: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class CommitVersionResponse(_message.Message):
    __slots__ = ("committed", "version", "cursor")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    version: int
    cursor: int
    def __init__(self, committed: _Optional[bool] = ..., version: _Optional[int] = ..., cursor: _Optional[int] = ...) -> None: ...

class CommitVersionsRequest(_message.Message):
    __slots__ = ("commits",)
    COMMITS_FIELD_NUMBER: _ClassVar[int]
    commits: _containers.RepeatedCompositeFieldContainer[CommitVersionRequest]
    def __init__(self, commits: _Optional[_Iterable[_Union[CommitVersionRequest, _Mapping]]] = ...) -> None: ...

class CommitVersionsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CommitVersionResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[CommitVersionResponse, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("workspace", "path", "base_version", "device")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    base_version: int
    device: str
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ..., base_version: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("workspace", "path", "version", "device")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    version: int
    device: str
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ..., version: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class ListChangesRequest(_message.Message):
    __slots__ = ("workspace", "cursor", "limit")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    cursor: int
    limit: int
    def __init__(self, workspace: _Optional[str] = ..., cursor: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("path", "version", "cursor", "deleted", "size", "digest", "chunks", "device", "user", "created_at")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    path: str
    version: int
    cursor: int
    deleted: bool
    size: int
    digest: str
    chunks: _containers.RepeatedScalarFieldContainer[str]
    device: str
    user: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, path: _Optional[str] = ..., version: _Optional[int] = ..., cursor: _Optional[int] = ..., deleted: _Optional[bool] = ..., size: _Optional[int] = ..., digest: _Optional[str] = ..., chunks: _Optional[_Iterable[str]] = ..., device: _Optional[str] = ..., user: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListChangesResponse(_message.Message):
    __slots__ = ("changes", "cursor", "more")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    cursor: int
    more: bool
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., cursor: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("workspace", "path", "version")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    version: int
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DownloadResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("workspace", "path")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Change]
    def __init__(self, versions: _Optional[_Iterable[_Union[Change, _Mapping]]] = ...) -> None: ...

class CreateShareLinkRequest(_message.Message):
    __slots__ = ("workspace", "path", "version", "expires_in")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    version: int
    expires_in: int
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ..., version: _Optional[int] = ..., expires_in: _Optional[int] = ...) -> None: ...

class CreateShareLinkResponse(_message.Message):
    __slots__ = ("path", "url", "expires_at")
    PATH_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    path: str
    url: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, path: _Optional[str] = ..., url: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CollectGarbageRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollectGarbageResponse(_message.Message):
    __slots__ = ("chunks_forgotten", "objects_deleted")
    CHUNKS_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    chunks_forgotten: int
    objects_deleted: int
    def __init__(self, chunks_forgotten: _Optional[int] = ..., objects_deleted: _Optional[int] = ...) -> None: ...

class EnforceRetentionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnforceRetentionResponse(_message.Message):
    __slots__ = ("versions_deleted",)
    VERSIONS_DELETED_FIELD_NUMBER: _ClassVar[int]
    versions_deleted: int
    def __init__(self, versions_deleted: _Optional[int] = ...) -> None: ...

class ExpireShareLinksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExpireShareLinksResponse(_message.Message):
    __slots__ = ("links_deleted",)
    LINKS_DELETED_FIELD_NUMBER: _ClassVar[int]
    links_deleted: int
    def __init__(self, links_deleted: _Optional[int] = ...) -> None: ...
