"""Every Redis key and channel name benchcelery reads or writes, in one place.

All names of one bench live under one prefix, ``bc:<bench_id>:``, so several benches can share a
Redis server (and an ACL user can be restricted to ``~bc:<bench_id>:*`` / ``&bc:<bench_id>:*``).

kombu (Celery's broker transport), with ``global_keyprefix = <prefix>``:

==================================  ======  ===============================================
``<p><queue>``                      list    waiting messages, priority bucket 0 (at_front)
``<p><queue>\\x06\\x16<n>``           list    waiting messages of bucket n (3 = normal jobs)
``<p>unacked``                      hash    delivery tag -> the message exactly as it waited:
                                            taken by a worker, not yet acknowledged (= running)
``<p>_kombu.binding.<exchange>``    set     queue bindings
``<p>/<db>.celery.pidbox``          chan    remote control (inspect, revoke)
==================================  ======  ===============================================

benchcelery's own:

==================================  ======  ===============================================
``<p>q:<queue>:<site>``              list    waiting messages of one site, bucket 0 (at_front); the
                                            ``<p>q:<queue>:<site>\\x06\\x16<n>`` lists hold bucket n.
                                            kombu's own lists above only receive messages pushed by
                                            other tools (and a bench upgraded from the one-list
                                            layout): workers move them here (adopt.lua)
``<p>sites:<queue>``                zset    site -> virtual time: the sites with waiting jobs, taken
                                            in turn by fetch.lua (lowest first; +1/weight per turn)
``<p>fair:<queue>``                 hash    ``clock`` (virtual time of the last turn), ``w:<site>``
                                            weight, ``c:<site>`` most running at once, ``p:<site>``
                                            paused (written by jobs/fairness.py, jobs/site_pause.py)
``<p>running:<queue>``              hash    site -> running jobs of a site with a cap (fetch adds,
                                            ack/restore/recover subtract)
``<p>rates``                        hash    ``<method>`` or ``<site>\\x1f<method>`` -> ms between two
                                            starts (rate_limits in config; jobs/fairness.py);
                                            ``\\x1e<method>`` -> ``<ms>`` (whole bench) or
                                            ``s<ms>`` (each site): the app's ``rate_limit``
                                            decorator (jobs/ratelimit.py), which config overrides
``<p>rate:<name>``                  string  the rate limit's next free start (GCRA, ms; expires)
``<p>pending:<queue>``              hash    site -> number of waiting jobs (all buckets); kept
                                            by our transport with every push/take/restore
``<p>wake:<queue>``                 list    one token per push; idle workers block on it (BRPOP)
                                            and then take a job with the fetch script
``<p>inflight``                     hash    delivery tag (the take's owner token) -> JSON
                                            [owner token, list, taken at, site, queue, message
                                            tag or false (not read), 1 if counted in
                                            running:<queue>, 1 if its lease had lapsed before]
                                            of each taken job (delivery.py)
``<p>leases``                       zset    delivery tag -> lease expiry (epoch s); renewed by
                                            the live worker, recovered by anyone once lapsed
``<p>redeliveries``                 hash    message tag -> times its lease lapsed (poison guard)
``<p>recovered:<queue>``            hash    site -> jobs put back after their worker died
``<p>stale_acks``                   string  finishes reported by a worker whose lease had lapsed
``<p>lapsed_takes``                 zset    delivery tag -> when recover put the take back, or
                                            its worker failed on it (a late finish is stale, not
                                            lost; while any is there, fetches read the messages'
                                            lapses; kept a day)
``<p>lost_acks``                    string  finishes of takes Redis had no record of (restarted
                                            without its data, or put back and finished elsewhere)
``<p>failed:<queue>``               zset    job id -> failure time (failed-job registry)
``<p>failed:<queue>:data``          hash    job id -> JSON failure record
``<p>failed_queues``                set     every queue a failure was recorded under (a forged
                                            message may name a queue no config has)
``<p>job:<job_id>``                 string  status of a job enqueued with an explicit id:
                                            queued / started / finished (expires)
``<p>delayed``                      zset    entry id -> due time (epoch s): jobs that run later
                                            (``enqueue_in``/``enqueue_at``) and retries waiting
                                            for their next attempt; moved by broker/delayed.py
``<p>delayed:data``                 hash    entry id -> JSON [list, queue, site, job id, kind,
                                            message, status key, due]: the message exactly as
                                            it will be pushed
``<p>delayed:ids``                  hash    job id -> entry id (find, cancel, run now by job id)
``<p>scheduled:<queue>``            hash    site -> delayed jobs of the queue (kept with the set)
``<p>retrying:<queue>``             hash    site -> retries waiting among them (kept with the set)
``<p>paused``                       set     paused queue names (the fetch script skips them)
``<p>workers``                      zset    worker name -> last heartbeat (epoch s)
``<p>worker:<name>``                hash    worker facts (queues, pid, host, ...); expires
``<p>recovered:<queue>``            hash    site -> jobs of dead workers put back in the queue
                                            (orphans recovered; kept by the delivery path)
``<p>durations:<queue>``            hash    ``<method>\x1f<bucket>`` -> jobs whose run time fell in
                                            that histogram bucket, ``<method>\x1fsum`` -> total
                                            seconds; ``w<bucket>`` / ``wms`` the same for wait time
                                            (written by workers, read by ``bench metrics``)
``<p>hist:m:<hour>``                hash    ``<minute>\x1f<site>\x1f<queue>\x1f<kind>`` -> jobs enqueued (e),
                                            started (s), done (d), failed (f), retried (r) in that
                                            minute, started and done (x) / failed (y) in it, and
                                            w<bucket>: jobs that started after that wait (epoch
                                            minutes; one key per epoch hour; expires)
``<p>hist:h:<day>``                 hash    the same per epoch hour, one key per epoch day (rolled up
                                            from the minute keys; expires after ``history_hours_ttl``)
``<p>hist:j:<hour>``                hash    ``<queue>\x1f<method>\x1f<site>\x1f<d|w><bucket>`` -> jobs
                                            whose run (d) / wait (w) time fell in that bucket, ``f``
                                            -> failures; one key per epoch hour (expires)
``<p>hist:jd:<day>``                hash    the same per epoch day (rolled up; 30 days)
``<p>hist:x:<hour>``                zset    ``<queue>\x1f<method>\x1f<site>`` -> longest run (s) that hour
``<p>hist:xd:<day>``                zset    the same per epoch day (rolled up)
``<p>hist:rolled:<hour>``           string  set by the one process that rolled that hour up
``<p>dashboard:session:<id>``      string  JSON of one dashboard login session (user, CSRF
                                            token, secret fingerprint); expires with the login
``<p>scheduler:heartbeat``          string  JSON of the active scheduler's last tick; expires
``<p>scheduler:runs:<site>``        list    newest-first JSON run records of scheduled jobs
``<p>scheduler:last:<site>``        hash    scheduled job name -> JSON last run (outcome)
``<p>scheduler:lastrun``            hash    site -> epoch of the last job it enqueued
``<p>scheduler:problems``           string  JSON list of hook problems found by the last
                                            reconcile (bad cron, unimportable method)
``<p>redbeat::schedule``            zset    RedBeat: entry key -> next due time (epoch s)
``<p>redbeat::lock``                string  RedBeat: held by the active ``bench schedule``
``<p>redbeat:<site>::<event>::<m>`` hash    RedBeat entry (``definition``, ``meta``) of one
                                            scheduled job of one site (cron: ``::<expr>``)
==================================  ======  ===============================================

Channels, all inside the prefix (a bench's ACL user may use only ``&bc:<bench_id>:*``):

==================================  ======  ===============================================
``<p>realtime``                     chan    realtime events (Frappe's JSON wire format plus a
                                            ``bench`` field); ``bench realtime`` relays them
``<p>delayed:due``                  chan    due time of a newly delayed job (movers wake for it)
``<p>/<db>.celery.pidbox``          chan    remote control (kombu, above)
``<p>/<db>.celeryev/*``             chan    task and worker events (kombu)
==================================  ======  ===============================================

A bench id is restricted to ``BENCH_ID_ALPHABET`` (letters, digits, ``.``, ``_``, ``-``): it is
written unquoted into key names, Redis ACL rules (where ``*``, ``?`` and ``[`` are glob syntax),
and process names.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

# kombu's defaults; every producer, worker and inspector must agree on them.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
_BUCKET = tuple(max(s for s in PRIORITY_STEPS if s <= p) for p in range(10))  # priority -> its step
NORMAL_PRIORITY = 3  # ordinary jobs; at_front jobs use 0, which BRPOP serves first
FRONT_PRIORITY = 0

REALTIME_CHANNEL = "events"  # Frappe's global channel; benchcelery publishes on Keys.realtime_channel
BENCH_ID_ALPHABET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
EXECUTE_JOB = "benchcelery.execute_job"  # the Celery task every job's message names
UNKNOWN_SITE = "?"  # the site recorded for a message that names none (pending counts, failures)
RATE_SITE_SEP = "\x1f"  # rates field <site>\x1f<method>: a site's own limit of a method (config)
RATE_DECLARED = "\x1e"  # rates field \x1e<method>: the limit an app's decorator declares


@dataclass(frozen=True)
class Keys:
    """Key names of one bench. ``prefix`` includes the trailing colon."""

    bench_id: str

    @functools.cached_property
    def prefix(self) -> str:
        return f"bc:{self.bench_id}:"

    # --- kombu (already prefixed by kombu itself; these are the raw Redis names) ---
    def queue_lists(self, queue: str) -> list[str]:
        """kombu's lists of ``queue`` (one per priority bucket, in the order they are served). Jobs
        wait in per-site lists (``site_lists``); these hold only messages pushed by other tools or
        left by the one-list layout, until a worker moves them (adopt.lua)."""
        p = self.prefix
        return [f"{p}{queue}" if step == 0 else f"{p}{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]

    def queue_list(self, queue: str, priority: int) -> str:
        """The list a message of ``priority`` waits in (kombu's bucket: the largest step <= priority)."""
        step = _BUCKET[max(0, min(priority, 9))]
        return f"{self.prefix}{queue}" if step == 0 else f"{self.prefix}{queue}{PRIORITY_SEP}{step}"

    # --- sites sharing a queue (fetch.lua takes them in turn) ---
    def site_lists(self, queue: str, site: str) -> list[str]:
        """The lists holding ``site``'s waiting messages of ``queue``, in the order they are served."""
        base = f"{self.prefix}q:{queue}:{site}"
        return [base if step == 0 else f"{base}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]

    def site_list(self, queue: str, site: str, priority: int) -> str:
        """The list a message of ``site`` and ``priority`` waits in."""
        step = _BUCKET[max(0, min(priority, 9))]
        base = f"{self.prefix}q:{queue}:{site}"
        return base if step == 0 else f"{base}{PRIORITY_SEP}{step}"

    def sites(self, queue: str) -> str:
        return f"{self.prefix}sites:{queue}"

    def fair(self, queue: str) -> str:
        return f"{self.prefix}fair:{queue}"

    def running(self, queue: str) -> str:
        return f"{self.prefix}running:{queue}"

    @property
    def rates(self) -> str:
        return f"{self.prefix}rates"

    def rate(self, name: str) -> str:
        return f"{self.prefix}rate:{name}"

    @property
    def unacked(self) -> str:
        return f"{self.prefix}unacked"

    # --- reliable delivery (delivery.py): in-flight jobs and their leases ---
    @property
    def inflight(self) -> str:
        return f"{self.prefix}inflight"

    @property
    def leases(self) -> str:
        return f"{self.prefix}leases"

    @property
    def redeliveries(self) -> str:
        return f"{self.prefix}redeliveries"

    @property
    def stale_acks(self) -> str:
        return f"{self.prefix}stale_acks"

    @property
    def lost_acks(self) -> str:
        return f"{self.prefix}lost_acks"

    @property
    def lapsed_takes(self) -> str:
        return f"{self.prefix}lapsed_takes"

    def wake(self, queue: str) -> str:
        return f"{self.prefix}wake:{queue}"

    def recovered(self, queue: str) -> str:
        return f"{self.prefix}recovered:{queue}"

    @property
    def kombu_prefix(self) -> str:
        return self.prefix

    @property
    def redbeat_prefix(self) -> str:
        return f"{self.prefix}redbeat:"

    @classmethod
    def from_prefix(cls, prefix: str) -> Keys:
        """The Keys whose ``prefix`` is ``prefix`` (kombu knows only its global_keyprefix)."""
        return cls(prefix.removeprefix("bc:").removesuffix(":"))

    # --- ours ---
    def pending_counts(self, queue: str) -> str:
        return f"{self.prefix}pending:{queue}"

    def failed(self, queue: str) -> str:
        return f"{self.prefix}failed:{queue}"

    def failed_data(self, queue: str) -> str:
        return f"{self.prefix}failed:{queue}:data"

    def job_status(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def terminated_by(self, job_id: str) -> str:
        """Who asked to terminate a running job (the worker's failure record names it)."""
        return f"{self.prefix}terminated-by:{job_id}"

    def job_result(self, job_id: str) -> str:
        """A finished job's return value and end time (kept ``rq_results_ttl``)."""
        return f"{self.prefix}result:{job_id}"

    def job_meta(self, job_id: str) -> str:
        """A job's ``meta`` dict (rq's ``job.meta`` + ``save_meta()``)."""
        return f"{self.prefix}meta:{job_id}"

    # --- jobs that run later and retries (broker/delayed.py), queue pause (jobs/pause.py) ---
    @property
    def delayed(self) -> str:
        return f"{self.prefix}delayed"

    @property
    def delayed_data(self) -> str:
        return f"{self.prefix}delayed:data"

    @property
    def delayed_ids(self) -> str:
        return f"{self.prefix}delayed:ids"

    @property
    def delayed_channel(self) -> str:
        return f"{self.prefix}delayed:due"

    def scheduled_counts(self, queue: str) -> str:
        return f"{self.prefix}scheduled:{queue}"

    def retrying_counts(self, queue: str) -> str:
        return f"{self.prefix}retrying:{queue}"

    @property
    def paused(self) -> str:
        return f"{self.prefix}paused"

    def durations(self, queue: str) -> str:
        return f"{self.prefix}durations:{queue}"

    # --- history (jobs/history.py): counters per minute/hour, method histograms per hour/day ---
    def hist_minutes(self, hour: int) -> str:
        return f"{self.prefix}hist:m:{hour}"

    def hist_hours(self, day: int) -> str:
        return f"{self.prefix}hist:h:{day}"

    def hist_methods(self, hour: int) -> str:
        return f"{self.prefix}hist:j:{hour}"

    def hist_methods_daily(self, day: int) -> str:
        return f"{self.prefix}hist:jd:{day}"

    def hist_max(self, hour: int) -> str:
        return f"{self.prefix}hist:x:{hour}"

    def hist_max_daily(self, day: int) -> str:
        return f"{self.prefix}hist:xd:{day}"

    def hist_rolled(self, hour: int) -> str:
        return f"{self.prefix}hist:rolled:{hour}"

    def dashboard_session(self, session_id: str) -> str:
        return f"{self.prefix}dashboard:session:{session_id}"

    @property
    def failed_queues(self) -> str:
        """Set of every queue name a failure was recorded under (configured or not)."""
        return f"{self.prefix}failed_queues"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    def worker(self, name: str) -> str:
        return f"{self.prefix}worker:{name}"

    @property
    def scheduler_heartbeat(self) -> str:
        return f"{self.prefix}scheduler:heartbeat"

    def scheduler_runs(self, site: str) -> str:
        return f"{self.prefix}scheduler:runs:{site}"

    def scheduler_last(self, site: str) -> str:
        return f"{self.prefix}scheduler:last:{site}"

    def scheduler_enqueued(self, site: str) -> str:
        """``<event>::<method>`` -> when its current run was enqueued (by the scheduler or a trigger)."""
        return f"{self.prefix}scheduler:enqueued:{site}"

    @property
    def scheduler_lastrun(self) -> str:
        return f"{self.prefix}scheduler:lastrun"

    @property
    def scheduler_problems(self) -> str:
        return f"{self.prefix}scheduler:problems"

    # RedBeat derives these from ``redbeat_prefix`` (``redbeat_key_prefix``); read-only here.
    @property
    def redbeat_schedule(self) -> str:
        return f"{self.redbeat_prefix}:schedule"

    @property
    def redbeat_lock(self) -> str:
        return f"{self.redbeat_prefix}:lock"

    def redbeat_entry(self, name: str) -> str:
        return f"{self.redbeat_prefix}{name}"

    @property
    def realtime_channel(self) -> str:
        return f"{self.prefix}realtime"

    @property
    def acl_key_pattern(self) -> str:
        return f"{self.prefix}*"

    def acl_channel_patterns(self, db: int = 0) -> list[str]:
        """Channel rules a bench's ACL user needs. Redis checks PSUBSCRIBE patterns literally, so
        kombu's control (pidbox) and event patterns are listed as they are, besides ``<p>*``."""
        p = self.prefix
        return [f"{p}*", f"{p}/{db}.celery.pidbox", f"{p}/{db}.celeryev/*"]


def is_valid_bench_id(value: object) -> bool:
    return isinstance(value, str) and bool(BENCH_ID_ALPHABET.match(value))


def sanitise_bench_id(raw: str) -> str:
    """A bench id from any text (e.g. a path): characters outside the alphabet become ``-``; a long
    one keeps its end and a hash of the whole, so two long paths never share an id."""
    text = re.sub(r"[^A-Za-z0-9._-]", "-", raw).strip("-.") or "bench"
    if len(text) > 100:
        text = f"{text[-80:].lstrip('-.')}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"
    return text if BENCH_ID_ALPHABET.match(text) else f"b{text}"
