"""Connection settings: --url/--token, MAILFLEET_URL/MAILFLEET_TOKEN, or named profiles.

Profiles live in `profiles.ini` under the user's config folder (platformdirs; the
MAILFLEET_CONFIG variable names another file). The file holds tokens, so it is written
with mode 0600 in a 0700 folder and replaced atomically.
"""

from __future__ import annotations

import configparser
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from mailfleet_cli.errors import CliError, Exit

SECTION_PREFIX = "profile "
SETTINGS = "mailfleet"


def config_path() -> Path:
    override = os.environ.get("MAILFLEET_CONFIG")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("mailfleet")) / "profiles.ini"


@dataclass
class Profile:
    name: str
    url: str
    token: str | None = None
    ca_bundle: str | None = None


@dataclass
class Connection:
    """Where to send requests and as whom; `source` says where each came from (never the token)."""

    url: str
    token: str | None
    ca_bundle: str | None
    url_from: str
    token_from: str


class ProfileStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_path()
        self._parser = configparser.ConfigParser(interpolation=None)
        if self.path.exists():
            self._warn_if_open()
            try:
                self._parser.read(self.path, encoding="utf-8")
            except configparser.Error as exc:
                raise CliError(f"{self.path}: not a profiles file ({exc.message})") from None

    def _warn_if_open(self) -> None:
        mode = self.path.stat().st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            print(
                f"mailfleet: warning: {self.path} is readable by others "
                f"(mode {stat.S_IMODE(mode):o}); it holds tokens: chmod 600 it",
                file=sys.stderr,
            )

    @property
    def current(self) -> str | None:
        return self._parser.get(SETTINGS, "current", fallback=None)

    def names(self) -> list[str]:
        return sorted(
            s[len(SECTION_PREFIX):] for s in self._parser.sections() if s.startswith(SECTION_PREFIX)
        )

    def get(self, name: str) -> Profile:
        section = SECTION_PREFIX + name
        if not self._parser.has_section(section):
            known = ", ".join(self.names()) or "none yet"
            raise CliError(f"no profile named {name!r} (profiles: {known})", Exit.NOT_FOUND)
        data = self._parser[section]
        return Profile(
            name=name,
            url=data.get("url", ""),
            token=data.get("token") or None,
            ca_bundle=data.get("ca_bundle") or None,
        )

    def put(self, profile: Profile) -> None:
        section = SECTION_PREFIX + profile.name
        self._parser[section] = {"url": profile.url}
        if profile.token:
            self._parser[section]["token"] = profile.token
        if profile.ca_bundle:
            self._parser[section]["ca_bundle"] = profile.ca_bundle

    def remove(self, name: str) -> None:
        self.get(name)
        self._parser.remove_section(SECTION_PREFIX + name)
        if self.current == name:
            self._parser.remove_option(SETTINGS, "current")

    def use(self, name: str) -> None:
        self.get(name)
        if not self._parser.has_section(SETTINGS):
            self._parser.add_section(SETTINGS)
        self._parser[SETTINGS]["current"] = name

    def save(self) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written 0600 from the first byte, then moved over the old file in one step.
        fd, tmp = tempfile.mkstemp(prefix=".profiles-", dir=folder)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                self._parser.write(out)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def resolve(
    url: str | None, token: str | None, profile: str | None, ca_bundle: str | None = None
) -> Connection:
    """Flags win over the environment, which wins over the chosen (or current) profile."""
    env_url = os.environ.get("MAILFLEET_URL") or None
    env_token = os.environ.get("MAILFLEET_TOKEN") or None
    chosen = profile or os.environ.get("MAILFLEET_PROFILE") or None
    stored: Profile | None = None
    if chosen or not (url or env_url):
        store = ProfileStore()
        name = chosen or store.current
        if name:
            stored = store.get(name)
    url_from, token_from = "--url", "--token"
    if not url:
        url, url_from = env_url, "MAILFLEET_URL"
    if not url and stored:
        url, url_from = stored.url, f"profile {stored.name}"
    if not token:
        token, token_from = env_token, "MAILFLEET_TOKEN"
    if not token and stored:
        token, token_from = stored.token, f"profile {stored.name}"
    if not url:
        raise CliError(
            "no API URL: give --url, set MAILFLEET_URL, or add a profile "
            "(mailfleet profile add NAME --url URL)"
        )
    if not url.startswith(("http://", "https://")):
        raise CliError(f"url: {url!r} must start with http:// or https://")
    return Connection(
        url=url.rstrip("/"),
        token=token,
        ca_bundle=ca_bundle or (stored.ca_bundle if stored else None),
        url_from=url_from,
        token_from=token_from if token else "none",
    )
