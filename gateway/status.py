"""The states of a job and of an attempt: one enum each, the only spelling of them anywhere.

A job is what the client sees; an attempt is one try on one candidate model. Values are plain
strings in the database and on the wire (StrEnum), so rows written before this enum read back.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptStatus(StrEnum):
    SUBMITTING = "submitting"  # the row is written before the provider is called
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The submit may have reached the provider, but no task id came back and the protocol has no
    #: id of ours to look the task up by: never resubmitted, and its task is accounted if it surfaces.
    UNCONFIRMED = "unconfirmed"


#: Jobs a runner may claim and drive.
ACTIVE_JOB: tuple[JobStatus, ...] = (JobStatus.QUEUED, JobStatus.IN_PROGRESS)
#: Jobs that are done: nothing moves them again.
TERMINAL_JOB: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
#: Attempts whose provider task may still be running.
LIVE_ATTEMPT: tuple[AttemptStatus, ...] = (AttemptStatus.SUBMITTING, AttemptStatus.QUEUED, AttemptStatus.IN_PROGRESS)
