"""Schemas of the queue dashboard's API (vidwiz/system/queue.py, vidwiz/system/task_queue.py)."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from vidwiz.fields import DateTimeText, StrictInteger, StrictString, int_range, length
from vidwiz.system.actor_queue import STATES

JOB_STATUSES = ("queued", "deferred", "in_progress", "complete", "failed", "retry", "cancelled", "aborted")
TASK_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
# arq job ids: uuids, or ids naming the queue, a job and its subject (`<prefix>arq:queue:video_changed:<id>`,
# `cron:<prefix>sweep:…`). Not starting with a dot: a path segment `.`/`..` never reaches the route.
JOB_ID_PATTERN = r"^[A-Za-z0-9_:-][A-Za-z0-9_:.-]{0,199}$"


class PageQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = StrictInteger(from_text=True, load_default=50, validate=int_range(1, 500))
    offset = StrictInteger(from_text=True, load_default=0, validate=int_range(0, 100_000))


class QueueQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = StrictInteger(from_text=True, load_default=50, validate=int_range(1, 500))


class JobListQuerySchema(PageQuerySchema):
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    function = StrictString(load_default=None, validate=length(1, 100))
    status = fields.String(load_default=None, validate=validate.OneOf(JOB_STATUSES))
    q = StrictString(
        load_default=None,
        validate=length(1, 200),
        metadata={"description": "Text within the job id or the JSON of its arguments (e.g. a video id)"},
    )


class JobPathSchema(Schema):
    job_id = fields.String(required=True, validate=validate.Regexp(JOB_ID_PATTERN))


class TaskActionPathSchema(Schema):
    task_id = StrictInteger(from_text=True, required=True)


class JobSchema(Schema):
    job_id = fields.String(required=True)
    function = fields.String(required=True)
    args = fields.Raw(required=True, metadata={"description": "the job's arguments (repr() when not JSON)"})
    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES))
    tries = fields.Integer(required=True)
    enqueue_time = DateTimeText(required=True, allow_none=True)
    scheduled_time = DateTimeText(required=True, allow_none=True)  # when it is due
    start_time = DateTimeText(required=True, allow_none=True)
    finish_time = DateTimeText(required=True, allow_none=True)
    run_seconds = fields.Float(required=True, allow_none=True, metadata={"description": "so far, when running"})
    error = fields.String(required=True, allow_none=True)
    result = fields.Raw(required=True, allow_none=True)


class JobDetailSchema(JobSchema):
    runs = fields.List(fields.Nested(JobSchema), required=True, metadata={"description": "finished runs, newest first"})


class QueueSnapshotSchema(Schema):
    queue = fields.String(required=True)
    queued_total = fields.Integer(required=True)
    queued = fields.List(fields.Nested(JobSchema), required=True)
    in_progress = fields.List(fields.Nested(JobSchema), required=True)
    results = fields.List(fields.Nested(JobSchema), required=True)


class JobPageSchema(Schema):
    state = fields.String(required=True)
    total = fields.Integer(required=True, metadata={"description": "jobs matching the filters"})
    offset = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    jobs = fields.List(fields.Nested(JobSchema), required=True)


class JobActionSchema(Schema):
    job_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["aborted", "aborting", "queued"]))
    function = fields.String()
    args = fields.Raw()


class DepthSchema(Schema):
    queued = fields.Integer(required=True)
    deferred = fields.Integer(required=True)
    in_progress = fields.Integer(required=True)


class FunctionStatsSchema(Schema):
    function = fields.String(required=True)
    success = fields.Integer(required=True)
    failure = fields.Integer(required=True)
    retry = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)
    per_minute = fields.Float(required=True)
    p50_ms = fields.Integer(required=True, allow_none=True, metadata={"description": "histogram bucket bound"})
    p95_ms = fields.Integer(required=True, allow_none=True, metadata={"description": "histogram bucket bound"})


class MinuteSchema(Schema):
    minute = DateTimeText(required=True)
    success = fields.Integer(required=True)
    failure = fields.Integer(required=True)
    retry = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)


class ActorHealthSchema(Schema):
    alive = fields.Boolean(required=True)
    status = fields.String(required=True, allow_none=True, metadata={"description": "arq's health-check line"})
    expires_in_seconds = fields.Float(required=True, allow_none=True)


class CronSchema(Schema):
    name = fields.String(required=True)
    function = fields.String(required=True)
    schedule = fields.String(required=True)
    last_run = DateTimeText(required=True, allow_none=True)
    last_status = fields.String(required=True, allow_none=True)
    next_run = DateTimeText(required=True)


class QueueOverviewSchema(Schema):
    queue = fields.String(required=True)
    depth = fields.Nested(DepthSchema, required=True)
    functions = fields.List(fields.Nested(FunctionStatsSchema), required=True)
    minutes = fields.List(fields.Nested(MinuteSchema), required=True, metadata={"description": "last hour"})
    health = fields.Nested(ActorHealthSchema, required=True)
    cron = fields.List(fields.Nested(CronSchema), required=True)


class TaskCountSchema(Schema):
    task_type = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(TASK_STATUSES))
    count = fields.Integer(required=True)


class TaskRowSchema(Schema):
    task_id = fields.Integer(required=True)
    task_type = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(TASK_STATUSES))
    video_id = fields.String(required=True, allow_none=True)
    retry_count = fields.Integer(required=True)
    error_message = fields.String(required=True, allow_none=True)
    created_at = DateTimeText(required=True)
    started_at = DateTimeText(required=True, allow_none=True)
    completed_at = DateTimeText(required=True, allow_none=True)


class TaskQueueSchema(Schema):
    counts = fields.List(fields.Nested(TaskCountSchema), required=True)
    reclaim_after_seconds = fields.Integer(required=True)
    stale = fields.List(fields.Nested(TaskRowSchema), required=True, metadata={"description": "in progress too long"})
    failed = fields.List(fields.Nested(TaskRowSchema), required=True, metadata={"description": "newest first"})
    failed_total = fields.Integer(required=True)
    pending = fields.List(fields.Nested(TaskRowSchema), required=True, metadata={"description": "oldest first"})
    pollers = fields.Dict(
        keys=fields.String(), values=fields.Integer(), required=True, metadata={"description": "waiting now, per type"}
    )
