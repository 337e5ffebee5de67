import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateUserRequest(_message.Message):
    __slots__ = ("handle",)
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    handle: str
    def __init__(self, handle: _Optional[str] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("id", "handle")
    ID_FIELD_NUMBER: _ClassVar[int]
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    id: int
    handle: str
    def __init__(self, id: _Optional[int] = ..., handle: _Optional[str] = ...) -> None: ...

class FollowRequest(_message.Message):
    __slots__ = ("user", "followee")
    USER_FIELD_NUMBER: _ClassVar[int]
    FOLLOWEE_FIELD_NUMBER: _ClassVar[int]
    user: int
    followee: int
    def __init__(self, user: _Optional[int] = ..., followee: _Optional[int] = ...) -> None: ...

class FollowResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    def __init__(self, changed: _Optional[bool] = ...) -> None: ...

class StartUploadRequest(_message.Message):
    __slots__ = ("user", "size", "content_type")
    USER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    user: int
    size: int
    content_type: str
    def __init__(self, user: _Optional[int] = ..., size: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class Upload(_message.Message):
    __slots__ = ("id", "size", "offset", "complete", "digest", "content_type")
    ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    id: int
    size: int
    offset: int
    complete: bool
    digest: str
    content_type: str
    def __init__(self, id: _Optional[int] = ..., size: _Optional[int] = ..., offset: _Optional[int] = ..., complete: _Optional[bool] = ..., digest: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class PutChunkRequest(_message.Message):
    __slots__ = ("user", "upload", "offset", "data")
    USER_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    user: int
    upload: int
    offset: int
    data: bytes
    def __init__(self, user: _Optional[int] = ..., upload: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetUploadRequest(_message.Message):
    __slots__ = ("user", "upload")
    USER_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    user: int
    upload: int
    def __init__(self, user: _Optional[int] = ..., upload: _Optional[int] = ...) -> None: ...

class ReadMediaRequest(_message.Message):
    __slots__ = ("user", "upload", "offset", "length")
    USER_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    user: int
    upload: int
    offset: int
    length: int
    def __init__(self, user: _Optional[int] = ..., upload: _Optional[int] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class MediaChunk(_message.Message):
    __slots__ = ("data", "size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    size: int
    def __init__(self, data: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...

class CreatePostRequest(_message.Message):
    __slots__ = ("user", "text", "media")
    USER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    user: int
    text: str
    media: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, user: _Optional[int] = ..., text: _Optional[str] = ..., media: _Optional[_Iterable[int]] = ...) -> None: ...

class Media(_message.Message):
    __slots__ = ("upload", "digest", "content_type", "size")
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    upload: int
    digest: str
    content_type: str
    size: int
    def __init__(self, upload: _Optional[int] = ..., digest: _Optional[str] = ..., content_type: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class Post(_message.Message):
    __slots__ = ("id", "author", "text", "media", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    author: int
    text: str
    media: _containers.RepeatedCompositeFieldContainer[Media]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., author: _Optional[int] = ..., text: _Optional[str] = ..., media: _Optional[_Iterable[_Union[Media, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeletePostRequest(_message.Message):
    __slots__ = ("user", "post")
    USER_FIELD_NUMBER: _ClassVar[int]
    POST_FIELD_NUMBER: _ClassVar[int]
    user: int
    post: int
    def __init__(self, user: _Optional[int] = ..., post: _Optional[int] = ...) -> None: ...

class DeletePostResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class TimelineRequest(_message.Message):
    __slots__ = ("user", "cursor", "limit")
    USER_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    user: int
    cursor: str
    limit: int
    def __init__(self, user: _Optional[int] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class Timeline(_message.Message):
    __slots__ = ("posts", "next_cursor")
    POSTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[Post]
    next_cursor: str
    def __init__(self, posts: _Optional[_Iterable[_Union[Post, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class TrimRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrimResponse(_message.Message):
    __slots__ = ("timelines_trimmed", "posts_purged", "uploads_expired")
    TIMELINES_TRIMMED_FIELD_NUMBER: _ClassVar[int]
    POSTS_PURGED_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    timelines_trimmed: int
    posts_purged: int
    uploads_expired: int
    def __init__(self, timelines_trimmed: _Optional[int] = ..., posts_purged: _Optional[int] = ..., uploads_expired: _Optional[int] = ...) -> None: ...

class PrewarmRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PrewarmResponse(_message.Message):
    __slots__ = ("timelines_built", "active_users")
    TIMELINES_BUILT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_USERS_FIELD_NUMBER: _ClassVar[int]
    timelines_built: int
    active_users: int
    def __init__(self, timelines_built: _Optional[int] = ..., active_users: _Optional[int] = ...) -> None: ...
