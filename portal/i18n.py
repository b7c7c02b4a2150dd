"""German and English: the portal's texts, numbers and dates.

A dictionary per language, not gettext catalogues: about a hundred short strings, kept
side by side so a missing translation is seen in review. ``t(key)`` falls back to English,
then to the key itself, never to an empty string.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

LANGS = ("de", "en")

MESSAGES: dict[str, dict[str, str]] = {
    "title": {"en": "My meter", "de": "Mein Zähler"},
    "nav_now": {"en": "Now", "de": "Aktuell"},
    "nav_charts": {"en": "Consumption", "de": "Verbrauch"},
    "nav_profile": {"en": "Load profile", "de": "Lastgang"},
    "nav_transparency": {"en": "Transparency", "de": "Transparenz"},
    "nav_status": {"en": "Gateway", "de": "Gateway"},
    "nav_export": {"en": "Export", "de": "Export"},
    "nav_devices": {"en": "Devices", "de": "Geräte"},
    "logout": {"en": "Log out", "de": "Abmelden"},
    "login": {"en": "Log in", "de": "Anmelden"},
    "login_title": {"en": "Log in to your meter", "de": "Anmeldung an Ihrem Zähler"},
    "username": {"en": "User name", "de": "Benutzername"},
    "password": {"en": "Password", "de": "Passwort"},
    "new_password": {"en": "New password (at least 10 characters)", "de": "Neues Passwort (mindestens 10 Zeichen)"},
    "setup_code": {"en": "One-time code (from your letter)", "de": "Einmal-Code (aus Ihrem Brief)"},
    "setup_title": {"en": "Set your password", "de": "Passwort festlegen"},
    "setup_link": {"en": "First time here? Set your password with your one-time code.",
                   "de": "Zum ersten Mal hier? Legen Sie Ihr Passwort mit dem Einmal-Code fest."},
    "setup_done": {"en": "Password set. Please log in.", "de": "Passwort gesetzt. Bitte melden Sie sich an."},
    "setup_bad": {"en": "User name or one-time code wrong, or the code was used already.",
                  "de": "Benutzername oder Einmal-Code falsch, oder der Code wurde schon benutzt."},
    "login_bad": {"en": "User name or password wrong.", "de": "Benutzername oder Passwort falsch."},
    "too_many": {"en": "Too many attempts. Please wait {seconds} seconds before trying again.",
                 "de": "Zu viele Versuche. Bitte warten Sie {seconds} Sekunden, bevor Sie es erneut versuchen."},
    "password_too_short": {"en": "The password is too short (at least 10 characters).",
                           "de": "Das Passwort ist zu kurz (mindestens 10 Zeichen)."},
    "password_too_long": {"en": "The password is too long.", "de": "Das Passwort ist zu lang."},
    "forbidden_form": {"en": "This form was not sent from this portal and was refused.",
                       "de": "Dieses Formular kam nicht von diesem Portal und wurde abgelehnt."},
    "meter": {"en": "Meter", "de": "Zähler"},
    "read_at": {"en": "Read at", "de": "Abgelesen um"},
    "no_data": {"en": "No readings yet.", "de": "Noch keine Messwerte."},
    "power": {"en": "Power", "de": "Leistung"},
    "reg_1.8.0": {"en": "Energy imported, total", "de": "Bezug gesamt"},
    "reg_1.8.1": {"en": "Energy imported, tariff 1", "de": "Bezug Tarif 1"},
    "reg_1.8.2": {"en": "Energy imported, tariff 2", "de": "Bezug Tarif 2"},
    "reg_2.8.0": {"en": "Energy exported, total", "de": "Einspeisung gesamt"},
    "live": {"en": "Live", "de": "Live"},
    "day": {"en": "Day", "de": "Tag"},
    "week": {"en": "Week", "de": "Woche"},
    "month": {"en": "Month", "de": "Monat"},
    "year": {"en": "Year", "de": "Jahr"},
    "this_period": {"en": "This period", "de": "Dieser Zeitraum"},
    "previous_period": {"en": "Previous period", "de": "Vorheriger Zeitraum"},
    "consumption_of": {"en": "Consumption, {period} from {first}", "de": "Verbrauch, {period} ab {first}"},
    "total": {"en": "Total", "de": "Summe"},
    "earlier": {"en": "Earlier", "de": "Früher"},
    "later": {"en": "Later", "de": "Später"},
    "show": {"en": "Show", "de": "Anzeigen"},
    "profile_of": {"en": "15-minute load profile, {day}", "de": "15-Minuten-Lastgang, {day}"},
    "profile_source_meter": {"en": "Average power per 15 minutes as measured by the meter (P.01).",
                             "de": "Mittlere Leistung je 15 Minuten, vom Zähler gemessen (P.01)."},
    "profile_source_registers": {"en": "Average power per 15 minutes, from the register readings.",
                                 "de": "Mittlere Leistung je 15 Minuten, aus den Zählerständen berechnet."},
    "transparency_title": {"en": "What the gateway sent, to whom", "de": "Was das Gateway an wen gesendet hat"},
    "transparency_intro": {
        "en": "Every delivery of your data to a market party, as written in the gateway's consumer log.",
        "de": "Jede Übermittlung Ihrer Daten an einen Marktteilnehmer, wie sie im Verbraucherprotokoll des "
              "Gateways steht."},
    "active_profiles": {"en": "Who receives what (active access profiles)",
                        "de": "Wer was erhält (aktive Zugriffsprofile)"},
    "no_profiles": {"en": "No party receives data from this gateway.",
                    "de": "Kein Marktteilnehmer erhält Daten von diesem Gateway."},
    "no_deliveries": {"en": "Nothing has been sent yet.", "de": "Es wurde noch nichts gesendet."},
    "sent_at": {"en": "Sent", "de": "Gesendet"},
    "party": {"en": "Party", "de": "Empfänger"},
    "profile": {"en": "Profile", "de": "Profil"},
    "period": {"en": "Period", "de": "Zeitraum"},
    "what": {"en": "Values and resolution", "de": "Werte und Auflösung"},
    "status_title": {"en": "Gateway status", "de": "Gateway-Status"},
    "tunnels": {"en": "Tunnels to market parties", "de": "Tunnel zu Marktteilnehmern"},
    "selftests": {"en": "Self-tests", "de": "Selbsttests"},
    "last_reading": {"en": "Last reading", "de": "Letzte Ablesung"},
    "unknown": {"en": "unknown", "de": "unbekannt"},
    "export_title": {"en": "Export your readings", "de": "Messwerte exportieren"},
    "from": {"en": "From", "de": "Von"},
    "to": {"en": "To (exclusive)", "de": "Bis (ausschließlich)"},
    "format": {"en": "Format", "de": "Format"},
    "download": {"en": "Download", "de": "Herunterladen"},
    "bad_period": {"en": "Please give a period of at most 366 days, from before to.",
                   "de": "Bitte einen Zeitraum von höchstens 366 Tagen angeben, Von vor Bis."},
    "devices_title": {"en": "Devices on your home network", "de": "Geräte in Ihrem Heimnetz"},
    "devices_intro": {
        "en": "A device token lets a device on your home network read your data (read-only) through the JSON "
              "API and the live stream. It is shown once.",
        "de": "Ein Geräte-Token erlaubt einem Gerät in Ihrem Heimnetz, Ihre Daten über die JSON-API und den "
              "Live-Stream zu lesen (nur lesen). Es wird nur einmal angezeigt."},
    "device_name": {"en": "Device name", "de": "Gerätename"},
    "create_token": {"en": "Create token", "de": "Token erstellen"},
    "revoke": {"en": "Revoke", "de": "Widerrufen"},
    "new_token": {"en": "New token (copy it now; it is not shown again):",
                  "de": "Neues Token (jetzt kopieren; es wird nicht wieder angezeigt):"},
    "created": {"en": "Created", "de": "Erstellt"},
    "last_used": {"en": "Last used", "de": "Zuletzt benutzt"},
    "never": {"en": "never", "de": "nie"},
    "bad_name": {"en": "A name of 1 to 40 letters, digits, spaces, . _ -",
                 "de": "Ein Name aus 1 bis 40 Buchstaben, Ziffern, Leerzeichen, . _ -"},
    "change_password": {"en": "Change password", "de": "Passwort ändern"},
    "current_password": {"en": "Current password", "de": "Aktuelles Passwort"},
    "password_changed": {"en": "Password changed. Please log in again.",
                         "de": "Passwort geändert. Bitte melden Sie sich erneut an."},
    "not_found": {"en": "Not found.", "de": "Nicht gefunden."},
    "store_missing": {"en": "The gateway has no readings yet.", "de": "Das Gateway hat noch keine Messwerte."},
    "language": {"en": "Deutsch", "de": "English"},
    "weekdays": {"en": "Mon Tue Wed Thu Fri Sat Sun", "de": "Mo Di Mi Do Fr Sa So"},
    "months": {"en": "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec",
               "de": "Jan Feb Mär Apr Mai Jun Jul Aug Sep Okt Nov Dez"},
    # the access profiles in plain words
    "profile_words": {
        "en": "{party} receives {values}, as the {aggregation} over each {interval}, to {resolution} decimal "
              "places, every {every}, under {identity}. The gateway keeps what it sent for {days} days.",
        "de": "{party} erhält {values}, als {aggregation} über jeweils {interval}, auf {resolution} "
              "Nachkommastellen, alle {every}, unter {identity}. Das Gateway bewahrt das Gesendete {days} Tage auf."},
    "delivery_what": {"en": "{values}: the {aggregation} per {interval}, {resolution} decimal places, under "
                            "{identity}; {count} values",
                      "de": "{values}: {aggregation} je {interval}, {resolution} Nachkommastellen, unter "
                            "{identity}; {count} Werte"},
    "agg_last": {"en": "last value", "de": "letzten Wert"},
    "agg_delta": {"en": "increase", "de": "Zuwachs"},
    "agg_sum": {"en": "sum", "de": "Summe"},
    "agg_mean": {"en": "mean", "de": "Mittelwert"},
    "agg_max": {"en": "maximum", "de": "Höchstwert"},
    "id_meter_id": {"en": "your meter number", "de": "Ihrer Zählernummer"},
    "id_pseudonym": {"en": "a pseudonym instead of your meter number",
                     "de": "einem Pseudonym statt Ihrer Zählernummer"},
    "span_day": {"en": "day", "de": "Tag"},
    "span_days": {"en": "{n} days", "de": "{n} Tage"},
    "span_hour": {"en": "hour", "de": "Stunde"},
    "span_hours": {"en": "{n} hours", "de": "{n} Stunden"},
    "span_minute": {"en": "minute", "de": "Minute"},
    "span_minutes": {"en": "{n} minutes", "de": "{n} Minuten"},
    "span_seconds": {"en": "{n} seconds", "de": "{n} Sekunden"},
}

MEANINGS_DE = {
    "energy imported, total": "Bezug gesamt", "energy imported, tariff 1": "Bezug Tarif 1",
    "energy imported, tariff 2": "Bezug Tarif 2", "energy exported, total": "Einspeisung gesamt",
    "energy exported, tariff 1": "Einspeisung Tarif 1", "energy exported, tariff 2": "Einspeisung Tarif 2",
    "maximum demand": "Höchstleistung", "power imported, phase L1": "Leistung Phase L1",
    "power imported, phase L2": "Leistung Phase L2", "voltage L1": "Spannung L1", "voltage L2": "Spannung L2",
    "current L1": "Strom L1", "average power imported per interval": "mittlere Bezugsleistung je Intervall",
    "average power exported per interval": "mittlere Einspeiseleistung je Intervall",
    "reactive power Q1 per interval": "Blindleistung Q1 je Intervall",
    "reactive power Q4 per interval": "Blindleistung Q4 je Intervall",
}


def pick_language(cookie: str | None, accept: str | None) -> str:
    if cookie in LANGS:
        return str(cookie)
    for part in (accept or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGS:
            return code
    return "en"


def t(lang: str, key: str, **args: object) -> str:
    entry = MESSAGES.get(key)
    text = key if entry is None else entry.get(lang) or entry["en"]
    return text.format(**args) if args else text


def number(value: Decimal, lang: str, places: int | None = None) -> str:
    """A decimal as the household reads it: 1,234.5 or 1.234,5; exact unless ``places``."""
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    text = f"{value:,f}"
    if lang == "de":
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return text


def moment(utc_text: str, lang: str, zone: ZoneInfo) -> str:
    local = datetime.fromisoformat(utc_text).astimezone(zone)
    return local.strftime("%d.%m.%Y %H:%M:%S" if lang == "de" else "%Y-%m-%d %H:%M:%S")


def span(lang: str, seconds: int) -> str:
    for size, one, many in ((86400, "span_day", "span_days"), (3600, "span_hour", "span_hours"),
                            (60, "span_minute", "span_minutes")):
        if seconds % size == 0:
            count = seconds // size
            return t(lang, one) if count == 1 else t(lang, many, n=count)
    return t(lang, "span_seconds", n=seconds)


_SUMMARY = re.compile(r"(?P<values>[0-9.]+(?:, [0-9.]+)*) as (?P<agg>last|delta|sum|mean|max) per (?P<interval>\d+) s "
                      r"to (?P<res>\d+) places, identity (?P<id>meter_id|pseudonym), (?P<count>\d+) values")


def delivery_what(lang: str, summary: str) -> str:
    """The consumer log's summary of a delivery (written by the data processor in a fixed
    English form) in the reader's language; anything else is shown as it is."""
    found = _SUMMARY.fullmatch(summary)
    if found is None:
        return summary
    return t(lang, "delivery_what", values=found["values"], aggregation=t(lang, f"agg_{found['agg']}"),
             interval=span(lang, int(found["interval"])), resolution=found["res"],
             identity=t(lang, f"id_{found['id']}"), count=found["count"])


def meaning(lang: str, text: str) -> str:
    return MEANINGS_DE.get(text, text) if lang == "de" else text
