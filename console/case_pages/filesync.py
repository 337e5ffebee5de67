"""The FileSync page: the workspaces opened in this session, a workspace's files, and a
file's versions.

FileSync has members of its own: every call carries a workspace member's token, not the
scheduler's. So the page keeps, per session, the tokens of the workspaces made or opened
here (as the sync client keeps its token in a file), and sends a workspace's token with
that workspace's calls only; the scheduler's token never goes to FileSync. A token reaches
the console in a POST body, never in a URL (it would land in history and logs).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import grpc

from hourglass.console.case_pages.common import (
    CasePage,
    Context,
    Values,
    no_error,
    refused,
    remember,
    rpc,
)
from hourglass.console.client import ApiError

CASE = "filesync"
# Workspaces a session keeps, and the changes read to list a workspace's files.
KEEP = 20
MAX_CHANGES = 5_000
PAGE_SIZE = 1_000
# The requests' fields -> the inputs of the form that was posted.
CREATE_INPUTS = {"workspace": "workspace", "user": "user"}
OPEN_INPUTS = {"workspace": "open_workspace"}
_NOT_A_MEMBER = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def _stub(ctx: Context) -> Any:
    from hourglass.cases.filesync.v1 import filesync_pb2_grpc as pb_grpc

    return pb_grpc.FileSyncStub(ctx.channel)


def _flash(ctx: Context) -> dict[str, Any]:
    """The owner's token of a workspace made in this session, shown once."""
    return ctx.kept(CASE + ":made")


async def _files(ctx: Context, workspace: str, token: str) -> tuple[list[Any], bool]:
    """Each path's newest change (deleted ones too), by path; whether there were more
    changes than MAX_CHANGES to read."""
    from hourglass.cases.filesync.v1 import filesync_pb2 as pb

    newest: dict[str, Any] = {}
    cursor, read, more = 0, 0, True
    while more and read < MAX_CHANGES:
        answer = await rpc(
            _stub(ctx).ListChanges,
            pb.ListChangesRequest(workspace=workspace, cursor=cursor, limit=PAGE_SIZE),
            token=token,
        )
        for change in answer.changes:
            newest[change.path] = change
        read += len(answer.changes)
        cursor, more = answer.cursor, answer.more and bool(answer.changes)
    return sorted(newest.values(), key=lambda change: change.path), more


async def show(ctx: Context) -> Values:
    from hourglass.cases.filesync.v1 import filesync_pb2 as pb

    kept = ctx.kept(CASE)
    query = ctx.request.query
    workspace, path = query.get("workspace", ""), query.get("path", "")
    values: Values = {
        "workspaces": list(reversed(kept)),
        "workspace": workspace if workspace in kept else "",
        "file_path": path,
        "files": [],
        "truncated": False,
        "versions": [],
        "made": _flash(ctx).pop(workspace, ""),
        **no_error(),
    }
    if workspace and workspace not in kept:
        values.update(
            error=f"workspace: open {workspace!r} with a member's token first",
            error_input="open_workspace",
            form={"open_workspace": workspace},
        )
        return values
    if not workspace:
        return values
    token = kept[workspace]
    try:
        values["files"], values["truncated"] = await _files(ctx, workspace, token)
        if path:
            answer = await rpc(
                _stub(ctx).ListVersions,
                pb.ListVersionsRequest(workspace=workspace, path=path),
                token=token,
            )
            values["versions"] = list(answer.versions)  # newest first
    except ApiError as exc:
        values.update(error=exc.message, error_input="versions" if path else "files")
    return values


async def act(ctx: Context) -> str | Values:
    """Makes a workspace (keeping its owner's token, shown once) or opens one with a member's
    token; the workspace's page, or FileSync's refusal beside the input it is about."""
    from hourglass.cases.filesync.v1 import filesync_pb2 as pb

    form = {name: str(value) for name, value in (await ctx.request.post()).items()}
    stub = _stub(ctx)
    if form.get("action") == "create":
        workspace = form.get("workspace", "").strip()
        request = pb.CreateWorkspaceRequest(workspace=workspace, user=form.get("user", "").strip())
        try:
            token = (await rpc(stub.CreateWorkspace, request)).token
        except ApiError as exc:
            return refused(exc, CREATE_INPUTS, form)
        remember(_flash(ctx), workspace, token, limit=1)
    else:
        workspace, token = form.get("open_workspace", "").strip(), form.get("token", "").strip()
        try:
            await rpc(
                stub.ListChanges, pb.ListChangesRequest(workspace=workspace, limit=1), token=token
            )
        except ApiError as exc:
            form.pop("token", None)  # never written back into a page
            if exc.code in _NOT_A_MEMBER:
                return {"error": f"token: {exc.message}", "error_input": "token", "form": form}
            return refused(exc, OPEN_INPUTS, form)
    remember(ctx.kept(CASE), workspace, token, limit=KEEP)
    return f"/cases/{CASE}?{urlencode({'workspace': workspace})}"


PAGE = CasePage(CASE, "File sync", show, act)
