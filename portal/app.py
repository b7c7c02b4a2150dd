"""The portal's Flask app: pages for the household, a read-only JSON API for its devices.

``create_app(settings)`` builds it (the Flask tutorial's factory). Authorisation has one
door: ``_meter()`` turns a requested meter id into one of the logged-in consumer's meters or
a 404, and every view that reads data goes through it; the transparency log is queried with
the consumer's meters only. Login failures grow a delay per account and per source address
(``ratelimit``); nothing locks an account for good.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import wraps
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from flask import (
    Flask,
    Response,
    abort,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from appliance.tunnel_states import read_states
from portal import charts, data, i18n, periods
from portal.accounts import Accounts
from portal.passwords import password_problem
from portal.security import (
    LANG_COOKIE,
    PRE_COOKIE,
    SESSION_COOKIE,
    harden,
    new_pre_token,
    same_origin,
    set_cookie,
    token_matches,
)
from portal.settings import ConsumerSettings, PortalSettings

log = logging.getLogger("smgw.portal")
F = TypeVar("F", bound=Callable[..., Any])
_DEVICE_NAME = re.compile(r"[A-Za-z0-9 ._-]{1,40}")
STREAM_SECONDS = 3600.0
STREAM_POLL_S = 1.0
KEEPALIVE_S = 3.0


class Portal:
    """What the views share: settings, the accounts database, read-only store connections."""

    def __init__(self, settings: PortalSettings, accounts: Accounts) -> None:
        self.settings = settings
        self.accounts = accounts
        self.zone = ZoneInfo(settings.timezone)
        self._con: sqlite3.Connection | None = None
        self._opening = threading.Lock()
        self.streams = threading.BoundedSemaphore(max(1, settings.max_streams))
        self.stopping = threading.Event()  #: set by the server on SIGTERM: live streams end
        self.max_streams = settings.max_streams

    def store(self) -> sqlite3.Connection:
        """One read-only connection shared by the request threads (SQLite's serialized mode):
        one page cache instead of one per thread is 3.6 MB of the 40 MB budget, and the
        views' reads are index seeks of a few milliseconds. Streams and exports open their own."""
        with self._opening:
            if self._con is None:
                self._con = data.open_read_only(self.settings.store)
            return self._con

    def run_file(self, name: str) -> Any:
        try:
            return json.loads((self.settings.run_dir / name).read_text())
        except (OSError, ValueError):
            return None


def create_app(settings: PortalSettings, accounts: Accounts | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=16 * 1024, TEMPLATES_AUTO_RELOAD=False, JSON_SORT_KEYS=False)
    portal = Portal(settings, accounts or Accounts(settings.state_dir))
    app.extensions["smgw_portal"] = portal

    def P() -> Portal:
        return portal

    @app.before_request
    def _context() -> Response | None:
        g.lang = i18n.pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language"))
        g.session = portal.accounts.session(request.cookies.get(SESSION_COOKIE, ""))
        g.consumer = settings.consumer(g.session.consumer) if g.session else None
        if g.session is not None and g.consumer is None:  # removed from the config: the session is void
            g.session = None
        if request.method == "POST" and request.url_rule is not None:  # a 405 stays a 405
            expected = g.session.csrf if g.session else request.cookies.get(PRE_COOKIE)
            if not same_origin(request) or not token_matches(request.form.get("csrf"), expected):
                log.warning("refused a form post to %s from %s: origin or CSRF token wrong",
                            request.path, request.remote_addr)
                return Response(render_template("message.html", message=t("forbidden_form")), 403)
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        return harden(response)

    @app.context_processor
    def _helpers() -> dict[str, Any]:
        return {"t": t, "lang": g.get("lang", "en"), "consumer": g.get("consumer"),
                "csrf": g.session.csrf if g.get("session") else g.get("pre_token", ""),
                "num": lambda v, places=None: i18n.number(v, g.lang, places),
                "when": lambda text: i18n.moment(text, g.lang, portal.zone) if text else t("unknown"),
                "what": lambda summary: i18n.delivery_what(g.lang, summary)}

    def t(key: str, **args: object) -> str:
        return i18n.t(g.get("lang", "en"), key, **args)

    def login_required(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if g.consumer is None:
                return redirect(url_for("login"))
            return view(*args, **kwargs)
        return wrapped  # type: ignore[return-value]

    def meter_of(consumer: ConsumerSettings, wanted: str | None) -> str:
        """The one door to the store: a meter of this consumer, or 404."""
        if wanted is None or wanted == "":
            return consumer.meters[0]
        if wanted not in consumer.meters:
            abort(404)
        return wanted

    def day_arg(name: str, default: date) -> date:
        text = request.args.get(name)
        if not text:
            return default
        try:
            return date.fromisoformat(text)
        except ValueError:
            abort(400, description=f"{name}: not a date (YYYY-MM-DD)")

    def today() -> date:
        return datetime.now(portal.zone).date()

    # -- login, setup, logout ----------------------------------------------------------------

    def with_pre_token(page: str, status: int = 200, **context: Any) -> Response:
        g.pre_token = request.cookies.get(PRE_COOKIE) or new_pre_token()
        response = Response(render_template(page, **context), status)
        set_cookie(response, PRE_COOKIE, g.pre_token)
        return response

    def limited(name: str) -> tuple[list[str], float]:
        keys = [f"account:{name[:64]}", f"source:{request.remote_addr}"]
        return keys, portal.accounts.wait_left(keys)

    def too_many(page: str, wait: float) -> Response:
        seconds = int(wait) + 1
        log.warning("login from %s delayed %d s after repeated failures", request.remote_addr, seconds)
        response = with_pre_token(page, 429, error=t("too_many", seconds=seconds))
        response.headers["Retry-After"] = str(seconds)
        return response

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Response:
        if request.method == "GET":
            return with_pre_token("login.html", notice=t(request.args["notice"]) if request.args.get("notice")
                                  in ("setup_done", "password_changed") else None)
        name = request.form.get("username", "")[:64]
        password = request.form.get("password", "")[:512]
        keys, wait = limited(name)
        if wait > 0:
            return too_many("login.html", wait)
        consumer = settings.consumer(name)
        if consumer is None or not portal.accounts.check_password(name, password):
            portal.accounts.record_failure(keys)
            log.warning("failed login for %r from %s", name, request.remote_addr)
            return with_pre_token("login.html", 401, error=t("login_bad"))
        portal.accounts.clear_failures(keys)
        token, _session = portal.accounts.new_session(name, settings.session_hours)
        log.info("login of %r from %s", name, request.remote_addr)
        response = redirect(url_for("now"))
        set_cookie(response, SESSION_COOKIE, token, int(settings.session_hours * 3600))
        response.delete_cookie(PRE_COOKIE, path="/")
        return response  # type: ignore[return-value]

    @app.route("/setup", methods=["GET", "POST"])
    def setup() -> Response:
        if request.method == "GET":
            return with_pre_token("setup.html")
        name = request.form.get("username", "")[:64]
        keys, wait = limited(name)
        if wait > 0:
            return too_many("setup.html", wait)
        consumer = settings.consumer(name)
        if consumer is None or not portal.accounts.code_usable(consumer, request.form.get("code", "").strip()):
            portal.accounts.record_failure(keys)
            log.warning("failed password setup for %r from %s", name, request.remote_addr)
            return with_pre_token("setup.html", 401, error=t("setup_bad"))
        password = request.form.get("password", "")
        problem = password_problem(password)
        if problem:
            return with_pre_token("setup.html", 400, error=t(problem))
        portal.accounts.set_password(name, password, consumer.setup_code_sha256)
        portal.accounts.clear_failures(keys)
        log.info("password of %r set with the one-time code from %s", name, request.remote_addr)
        return redirect(url_for("login", notice="setup_done"))  # type: ignore[return-value]

    @app.post("/logout")
    def logout() -> Response:
        if g.session is not None:
            portal.accounts.end_session(g.session)
        response = redirect(url_for("login"))
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response  # type: ignore[return-value]

    @app.get("/lang/<code>")
    def language(code: str) -> Response:
        response = redirect(url_for("now"))
        if code in i18n.LANGS:
            set_cookie(response, LANG_COOKIE, code, 365 * 86400)
        return response  # type: ignore[return-value]

    @app.route("/password", methods=["GET", "POST"])
    @login_required
    def password() -> Response | str:
        if request.method == "GET":
            return render_template("password.html")
        name = g.consumer.name
        keys, wait = limited(name)
        if wait > 0:
            return Response(render_template("password.html", error=t("too_many", seconds=int(wait) + 1)), 429)
        if not portal.accounts.check_password(name, request.form.get("current", "")[:512]):
            portal.accounts.record_failure(keys)
            return Response(render_template("password.html", error=t("login_bad")), 401)
        problem = password_problem(request.form.get("password", ""))
        if problem:
            return Response(render_template("password.html", error=t(problem)), 400)
        portal.accounts.set_password(name, request.form["password"])
        log.info("password of %r changed from %s", name, request.remote_addr)
        response = redirect(url_for("login", notice="password_changed"))
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response  # type: ignore[return-value]

    # -- pages -------------------------------------------------------------------------------

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("now"))  # type: ignore[return-value]

    @app.get("/now")
    @login_required
    def now() -> str:
        meter = meter_of(g.consumer, request.args.get("meter"))
        current = data.now(portal.store(), meter) if settings.store.exists() else None
        return render_template("now.html", meter=meter, current=current)

    def chart_for(kind: periods.Kind, anchor: date, meter: str) -> dict[str, Any]:
        con = portal.store()
        this = periods.period(kind, anchor, portal.zone)
        before = periods.period(kind, periods.previous_first(kind, this.first), portal.zone)
        moment = datetime.now(UTC)
        current = data.consumption(con, meter, this.edges, now_utc=moment)
        previous = data.consumption(con, meter, before.edges, now_utc=moment)
        labels = _labels(kind, this.labels, g.lang)
        names = (t("this_period"), t("previous_period"))
        title = t("consumption_of", period=t(kind), first=this.first.isoformat())
        svg = charts.bar_chart(labels, current, previous, "kWh", lambda v: i18n.number(v, g.lang), names, title)
        total = sum((v for v in current if v is not None), Decimal(0))
        total_before = sum((v for v in previous if v is not None), Decimal(0))
        return {"kind": kind, "first": this.first, "svg": svg, "labels": labels, "current": current,
                "previous": previous, "total": total, "total_before": total_before, "title": title,
                "earlier": periods.previous_first(kind, this.first), "later": periods.next_first(kind, this.first)}

    @app.get("/charts")
    @login_required
    def chart_page() -> str:
        meter = meter_of(g.consumer, request.args.get("meter"))
        kind = request.args.get("kind", "day")
        if kind not in periods.KINDS:
            abort(404)
        if not settings.store.exists():
            return render_template("message.html", message=t("store_missing"))
        chart = chart_for(kind, day_arg("date", today()), meter)
        return render_template("charts.html", meter=meter, chart=chart, kinds=periods.KINDS)

    @app.get("/profile")
    @login_required
    def profile_page() -> str:
        meter = meter_of(g.consumer, request.args.get("meter"))
        day = day_arg("date", today())
        if not settings.store.exists():
            return render_template("message.html", message=t("store_missing"))
        edges = periods.quarter_hours(day, portal.zone)
        kw, source = load_profile_kw(meter, edges)
        labels = [e.astimezone(portal.zone).strftime("%H:%M") for e in edges[:-1]]
        title = t("profile_of", day=day.isoformat())
        svg = charts.bar_chart(labels, kw, None, "kW", lambda v: i18n.number(v, g.lang), (title, ""), title)
        return render_template("profile.html", meter=meter, day=day, svg=svg, source=source, rows=zip(labels, kw),
                               earlier=day - timedelta(days=1), later=day + timedelta(days=1))

    def load_profile_kw(meter: str, edges: tuple[datetime, ...]) -> tuple[list[Decimal | None], str]:
        con = portal.store()
        measured = data.load_profile(con, meter, edges[0], edges[-1])
        if measured:
            return [measured.get(e.isoformat(timespec="microseconds")) for e in edges[:-1]], "profile_source_meter"
        energy = data.consumption(con, meter, edges, now_utc=datetime.now(UTC))
        return [None if v is None else v * 4 for v in energy], "profile_source_registers"

    @app.get("/transparency")
    @login_required
    def transparency() -> str:
        before = request.args.get("before", type=int)
        entries = data.deliveries(portal.store(), g.consumer.meters, 100, before) if settings.store.exists() else []
        words = [profile_words(p) for p in settings.profiles]
        return render_template("transparency.html", entries=entries, profiles=words,
                               older=entries[-1][0] if len(entries) == 100 else None)

    def profile_words(p: Any) -> str:
        lang = g.lang
        values = ", ".join(f"{v.address} ({i18n.meaning(lang, v.meaning)}, {v.unit})" for v in p.values)
        return i18n.t(lang, "profile_words", party=p.party, values=values, aggregation=t(f"agg_{p.aggregation}"),
                      interval=i18n.span(lang, p.interval_s), resolution=p.resolution,
                      every=i18n.span(lang, p.send_every_s), identity=t(f"id_{p.identity}"), days=p.retention_days)

    @app.get("/status")
    @login_required
    def status() -> str:
        tunnels = read_states(settings.run_dir)
        selftests = portal.run_file("selftest.json") or {}
        last = {m: data.now(portal.store(), m) for m in g.consumer.meters} if settings.store.exists() else {}
        return render_template("status.html", tunnels=tunnels,
                               selftests=sorted(selftests.values(), key=lambda c: str(c.get("name")))
                               if isinstance(selftests, dict) else [], last=last)

    @app.get("/export")
    @login_required
    def export_page() -> str:
        return render_template("export.html", start=today() - timedelta(days=7), end=today() + timedelta(days=1))

    def period_args() -> tuple[datetime, datetime]:
        start, end = day_arg("from", today()), day_arg("to", today() + timedelta(days=1))
        if not start < end or (end - start).days > 366:
            abort(400, description=t("bad_period"))
        return (datetime.combine(start, datetime.min.time(), portal.zone).astimezone(UTC),
                datetime.combine(end, datetime.min.time(), portal.zone).astimezone(UTC))

    @app.get("/export/download")
    @login_required
    def export_download() -> Response:
        meter = meter_of(g.consumer, request.args.get("meter"))
        return export_response(meter, request.args.get("format", "csv"))

    def export_response(meter: str, fmt: str) -> Response:
        start, end = period_args()
        if fmt not in ("csv", "json"):
            abort(400, description="format: csv or json")
        if not settings.store.exists():
            abort(404)
        con = data.open_read_only(settings.store)  # its own: a long export must not hold the shared one
        rows = data.readings(con, meter, start, end)
        name = f"smgw-{meter}-{start.astimezone(portal.zone).date()}-{end.astimezone(portal.zone).date()}.{fmt}"
        body = _csv(rows) if fmt == "csv" else _json(rows, meter, start, end)
        response = Response(body, mimetype="text/csv" if fmt == "csv" else "application/json")
        response.call_on_close(con.close)  # also when the download is never read
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    # -- devices (tokens for the JSON API) ---------------------------------------------------

    @app.route("/devices", methods=["GET", "POST"])
    @login_required
    def devices() -> Response | str:
        created = error = None
        status = 200
        if request.method == "POST" and request.url_rule is not None:  # a 405 stays a 405
            name = request.form.get("name", "").strip()
            if not _DEVICE_NAME.fullmatch(name):
                error, status = t("bad_name"), 400
            else:
                try:
                    created = portal.accounts.new_device_token(g.consumer.name, name)
                    log.info("device token %r created by %r", name, g.consumer.name)
                except ValueError:
                    error, status = "20 tokens at most", 400
        page = render_template("devices.html", tokens=portal.accounts.device_tokens(g.consumer.name),
                               created=created, error=error)
        return Response(page, status)

    @app.post("/devices/<int:token_id>/revoke")
    @login_required
    def revoke(token_id: int) -> Response:
        if not portal.accounts.revoke_device_token(g.consumer.name, token_id):
            abort(404)
        return redirect(url_for("devices"))  # type: ignore[return-value]

    # -- live stream (SSE), for the page and for devices --------------------------------------

    def stream(meters: tuple[str, ...]) -> Response:
        if portal.max_streams == 0 or not portal.streams.acquire(blocking=False):
            return Response("too many live streams\n", 503, {"Retry-After": "10"}, mimetype="text/plain")
        if not settings.store.exists():
            portal.streams.release()
            abort(404)
        try:
            con = data.open_read_only(settings.store)
            last = data.last_readout_id(con)
        except BaseException:
            portal.streams.release()
            raise

        lang = g.get("lang", "en")

        def event(readout_id: int, meter: str, read_at: str) -> str:
            values = data.readout_registers(con, readout_id)
            shown = {a: i18n.number(Decimal(v), lang) for a, v in values.items()}
            phases = [Decimal(values[a]) for a in data.POWER_PHASES if a in values]
            if "1.7.0" in values or phases:
                shown["power"] = i18n.number(Decimal(values["1.7.0"]) if "1.7.0" in values else sum(phases, Decimal(0)),
                                             lang)
            doc = {"meter": meter, "read_at": read_at, "values": values,  # exact, for devices
                   "shown": shown, "read_at_shown": i18n.moment(read_at, lang, portal.zone)}  # for the page
            return f"id: {readout_id}\nevent: reading\ndata: {json.dumps(doc)}\n\n"

        def events() -> Iterator[str]:
            nonlocal last
            ends = time.monotonic() + STREAM_SECONDS
            quiet = 0.0
            yield "retry: 5000\n\n"
            while time.monotonic() < ends and not portal.stopping.is_set():
                fresh = data.readouts_after(con, meters, last)
                for readout_id, meter, read_at in fresh:
                    last = readout_id
                    yield event(readout_id, meter, read_at)
                quiet = 0.0 if fresh else quiet + STREAM_POLL_S
                if quiet >= KEEPALIVE_S:  # also how a closed client is noticed: the write fails
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                portal.stopping.wait(STREAM_POLL_S)

        closed = threading.Event()

        def release() -> None:  # the server calls it when the response ends, started or not
            if not closed.is_set():
                closed.set()
                con.close()
                portal.streams.release()

        response = Response(events(), mimetype="text/event-stream")  # needs no request context
        response.call_on_close(release)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Accel-Buffering"] = "no"
        return response

    @app.get("/live")
    @login_required
    def live() -> Response:
        return stream((meter_of(g.consumer, request.args.get("meter")),))

    # -- the JSON API for devices on the HAN (bearer token, read-only) -------------------------

    def api_consumer() -> ConsumerSettings:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        name = portal.accounts.device_consumer(token) if token else None
        consumer = settings.consumer(name) if name else None
        if consumer is None:
            abort(Response(json.dumps({"error": "a valid device token is needed (Authorization: Bearer ...)"}),
                           401, {"WWW-Authenticate": "Bearer"}, mimetype="application/json"))
        return consumer

    @app.get("/api/v1/meters")
    def api_meters() -> Any:
        return {"meters": list(api_consumer().meters)}

    @app.get("/api/v1/now")
    def api_now() -> Any:
        meter = meter_of(api_consumer(), request.args.get("meter"))
        current = data.now(portal.store(), meter) if settings.store.exists() else None
        if current is None:
            return {"meter": meter, "read_at": None, "registers": {}, "power_kw": None}
        return {"meter": meter, "read_at": current.read_at,
                "registers": {r.address: {"value": str(r.value), "unit": r.unit} for r in current.registers},
                "power_kw": None if current.power_kw is None else str(current.power_kw)}

    @app.get("/api/v1/consumption")
    def api_consumption() -> Any:
        meter = meter_of(api_consumer(), request.args.get("meter"))
        kind = request.args.get("kind", "day")
        if kind not in periods.KINDS:
            abort(400, description="kind: day, week, month or year")
        this = periods.period(kind, day_arg("date", today()), portal.zone)
        values = data.consumption(portal.store(), meter, this.edges, now_utc=datetime.now(UTC))
        return {"meter": meter, "kind": kind, "unit": "kWh",
                "buckets": [{"from": a.isoformat(), "to": b.isoformat(), "value": None if v is None else str(v)}
                            for a, b, v in zip(this.edges, this.edges[1:], values)]}

    @app.get("/api/v1/readings")
    def api_readings() -> Response:
        meter = meter_of(api_consumer(), request.args.get("meter"))
        return export_response(meter, "json")

    @app.get("/api/v1/deliveries")
    def api_deliveries() -> Any:
        consumer = api_consumer()
        entries = data.deliveries(portal.store(), consumer.meters, 200) if settings.store.exists() else []
        return {"deliveries": [{"at": e.at, "meter": e.meter, "party": e.party, "profile": e.profile,
                                "from": e.window_from, "to": e.window_to, "what": e.what,
                                "delivery_id": e.delivery_id} for _, e in entries]}

    @app.get("/api/v1/stream")
    def api_stream() -> Response:
        consumer = api_consumer()
        wanted = request.args.get("meter")
        return stream((meter_of(consumer, wanted),) if wanted else consumer.meters)

    # -- errors --------------------------------------------------------------------------------

    @app.errorhandler(400)
    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    def _error(exc: Any) -> Response:
        code = getattr(exc, "code", 400) or 400
        message = t("not_found") if code == 404 else str(getattr(exc, "description", "bad request"))
        if request.path.startswith("/api/"):
            return Response(json.dumps({"error": message}), code, mimetype="application/json")
        return Response(render_template("message.html", message=message), code)

    @app.errorhandler(sqlite3.Error)
    @app.errorhandler(FileNotFoundError)
    def _store_error(exc: Exception) -> Response:
        log.error("store unreadable for %s: %s", request.path, exc)
        return Response(render_template("message.html", message=t("store_missing")), 503)

    return app


def _labels(kind: str, raw: tuple[str, ...], lang: str) -> list[str]:
    if kind == "week":
        names = i18n.t(lang, "weekdays").split()
        return [names[int(x)] for x in raw]
    if kind == "year":
        names = i18n.t(lang, "months").split()
        return [names[int(x) - 1] for x in raw]
    return list(raw)


def _csv(rows: Iterator[data.ExportRow]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["read_at_utc", "address", "value", "unit"])
    for n, row in enumerate(rows, 1):
        # a leading = + - @ would be a formula in a spreadsheet: our values are decimals, units short words
        writer.writerow([row.read_at, row.address, row.value, row.unit.lstrip("=+-@")])
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _json(rows: Iterator[data.ExportRow], meter: str, start: datetime, end: datetime) -> Iterator[str]:
    yield json.dumps({"meter": meter, "from": start.isoformat(), "to": end.isoformat()})[:-1] + ', "readings": ['
    first = True
    for row in rows:
        yield ("" if first else ",") + json.dumps({"read_at": row.read_at, "address": row.address,
                                                   "value": row.value, "unit": row.unit or None})
        first = False
    yield "]}\n"
