"""The doveadm action policy: every command of Dovecot 2.3.19 (96, as `GET /doveadm/v1`
lists them) with its class, least role and reason, and the parameter rules on top.

doveadm runs as root on the backend. A command or parameter that runs a program or
reaches a file, URI or socket the caller names is never run through a job: dsync
`backup`/`sync` run a non-`tcp:` destination as a program (mailbox copies are built by
mailfleet's own migrations from the inventory: `DovecotDriver.dsync_backup`), `fs*`
read and delete any file through the posix driver, `dict*` open any `file:` URI,
`socketPath` connects to any UNIX socket, `userFile`/`usersFile` read any file,
`rawlog` writes any path. docs/security.md shows this table (generated from it).
"""

from __future__ import annotations

import re
from typing import Any

from mailfleet.drivers.policy import (
    ActionClass,
    Decision,
    Rule,
    change,
    decide,
    destructive,
    never,
    raise_to,
    read,
    refuse,
    session,
)
from mailfleet.models.tokens import Role

OP, ADMIN = Role.OPERATOR, Role.ADMIN

_ANY_FILE = "names any file or directory on the host, read or written as root"
_DSYNC = ("a `destination` that is not `tcp:` is run as a program (as root), and a `tcp:` "
          "one sends mail anywhere: mailbox copies run only as migrations, which build the "
          "destination from the inventory")
_FS = "reaches any file on the host through the fs driver it names (posix: the whole disk)"
_DICT = "only `dictUri` `proxy::<name>` (a dict the host's configuration declares)"

RULES: dict[str, Rule] = {
    # -- server and services
    "stop": destructive("stops the whole Dovecot server: every login fails until restarted"),
    "reload": change("re-reads the configuration; live sessions continue"),
    "serviceStop": destructive("stops Dovecot services: their logins fail until restarted"),
    "serviceStatus": read("the state of Dovecot's services"),
    "processStatus": read("the processes of Dovecot's services"),
    "instanceList": read("the Dovecot instances known on the host"),
    "instanceRemove": change("forgets an instance in the host's instance registry", ADMIN),
    # -- statistics
    "statsDump": read("metric values (`reset: true` makes it a change)"),
    "statsAdd": change("adds a metric at run time (cost on every event)", ADMIN),
    "statsRemove": change("removes a metric at run time", ADMIN),
    "oldstatsDump": read("old-style statistics"),
    "oldstatsReset": change("resets old-style statistics"),
    "penalty": read("authentication penalties per IP"),
    # -- sessions
    "who": read("live sessions per user"),
    "kick": session("ends a user's live sessions; clients log in again"),
    "proxyList": read("sessions this proxy forwards"),
    "proxyKick": session("ends proxied sessions of a user or destination"),
    "authCacheFlush": session("forgets cached logins: the next login authenticates again"),
    # -- director
    "directorStatus": read("backends and their users as the director sees them"),
    "directorMap": read("which backend each user goes to (`usersFile` refused)"),
    "directorDump": read("the director's configuration commands"),
    "directorRingStatus": read("the director ring"),
    "directorAdd": change("adds a backend to the director", ADMIN),
    "directorUpdate": change("changes a backend's weight (vhost count)", ADMIN),
    "directorUp": change("marks a backend up"),
    "directorDown": change("marks a backend down (its users move on next login)"),
    "directorRemove": destructive("removes a backend from the director"),
    "directorMove": session("moves a user to another backend (kicks its sessions)"),
    "directorKick": session("ends a user's sessions on every director"),
    "directorFlush": destructive("drops every user of a backend (all their sessions end)",
                                 OP),
    "directorRingAdd": change("adds a director to the ring", ADMIN),
    "directorRingRemove": destructive("removes a director from the ring"),
    # -- logs
    "logTest": change("writes test lines to every log"),
    "logReopen": change("reopens the log files"),
    "logFind": read("where the logs go (`logDir` refused)"),
    "logErrors": read("recent error lines of the logs"),
    # -- replication
    "replicatorStatus": read("replication state per user"),
    "replicatorDsyncStatus": read("running replication dsyncs"),
    "replicatorReplicate": change("queues users for replication"),
    "replicatorAdd": change("adds users to replication"),
    "replicatorRemove": change("removes a user from replication"),
    # -- dictionaries
    "dictGet": read(f"a dictionary value; {_DICT}"),
    "dictIter": read(f"dictionary keys and values; {_DICT}"),
    "dictSet": change(f"sets a dictionary value; {_DICT}"),
    "dictUnset": change(f"removes a dictionary value; {_DICT}"),
    "dictInc": change(f"increments a dictionary value; {_DICT}"),
    # -- files and mailbox copies: never through a job
    "fsGet": never(_FS),
    "fsPut": never(_FS),
    "fsCopy": never(_FS),
    "fsStat": never(_FS),
    "fsMetadata": never(_FS),
    "fsDelete": never(_FS),
    "fsIter": never(_FS),
    "fsIterDirs": never(_FS),
    "sisDeduplicate": never(f"`rootDir`/`queueDir` {_ANY_FILE}"),
    "sisFind": never(f"`rootDir` {_ANY_FILE}"),
    "backup": never(_DSYNC),
    "sync": never(_DSYNC),
    "dsyncServer": never("speaks the dsync protocol on the connection; crashes over HTTP"),
    "batch": never("runs arbitrary doveadm command lines (unchecked) and crashes the HTTP "
                   "worker on a bad one"),
    "import": never(f"`sourceLocation` is a mail location that {_ANY_FILE}"),
    # -- users and mailboxes
    "user": read("userdb fields of users (secret fields masked in the output)"),
    "mailboxList": read("a user's mailboxes"),
    "mailboxStatus": read("message counts and state of mailboxes"),
    "mailboxPath": read("where a mailbox is stored"),
    "mailboxMutf7": read("converts mailbox names between UTF-8 and mUTF-7; touches nothing"),
    "mailboxMetadataGet": read("a mailbox metadata value"),
    "mailboxMetadataList": read("mailbox metadata keys"),
    "mailboxMetadataSet": change("sets mailbox metadata"),
    "mailboxMetadataUnset": change("removes mailbox metadata"),
    "mailboxCreate": change("creates mailboxes"),
    "mailboxRename": change("renames a mailbox"),
    "mailboxSubscribe": change("subscribes mailboxes"),
    "mailboxUnsubscribe": change("unsubscribes mailboxes"),
    "mailboxUpdate": change("sets UIDVALIDITY / next UID: every client resynchronises",
                            ADMIN),
    "mailboxDelete": destructive("deletes mailboxes and the mail in them", OP),
    "mailboxCacheDecision": change("changes what the mailbox cache keeps"),
    "mailboxCacheRemove": change("drops cache entries (rebuilt on demand)"),
    "mailboxCachePurge": change("compacts the mailbox cache"),
    "search": read("which messages match a query (ids only)"),
    "fetch": read("message fields, including headers and bodies: mail content", ADMIN),
    "save": change("delivers a message (the `file` parameter is its text) to a mailbox"),
    "copy": change("copies messages"),
    "move": change("moves messages between mailboxes or users"),
    "flagsAdd": change("adds flags to messages"),
    "flagsRemove": change("removes flags from messages"),
    "flagsReplace": change("replaces messages' flags"),
    "altmove": change("moves messages to or from alternative storage"),
    "index": change("indexes messages (full-text search)"),
    "forceResync": change("rebuilds a mailbox's indexes"),
    "rebuildAttachments": change("rebuilds the has-attachment flags"),
    "expunge": destructive("deletes messages for good", OP),
    "deduplicate": destructive("deletes duplicate messages for good", OP),
    "purge": destructive("frees expunged messages for good (mdbox)", OP),
    "quotaGet": read("quota usage and limits"),
    "quotaRecalc": change("recalculates quota usage"),
}

# Parameters refused on every command that takes them.
FORBIDDEN_PARAMS: dict[str, str] = {
    "socketPath": "makes doveadm connect to any UNIX socket on the host",
    "userFile": "makes doveadm read its list of users from any file on the host",
    "usersFile": "makes doveadm read any file on the host",
    "rawlog": "makes dsync write a protocol log to any path on the host",
    "logDir": "makes doveadm scan any directory on the host",
    "sourceLocation": "is a mail location naming any path on the host",
    "inputPath": "names any file on the host",
    "rootDir": "names any directory on the host",
    "queueDir": "names any directory on the host",
}
DICT_URI = re.compile(r"^proxy::[A-Za-z0-9_.-]{1,64}$")
_WILDCARD = re.compile(r"[*?]")


def classify(action: str, params: dict[str, Any] | None) -> Decision:
    """The class and least role of one doveadm call, parameters included."""
    decision = decide("dovecot", RULES, action)
    if not decision.allowed:
        return decision
    params = params or {}
    for name, why in FORBIDDEN_PARAMS.items():
        if name in params:
            return refuse(decision, f"{action}: parameter {name!r} {why}: never through a job",
                          rule=f"dovecot.param.{name}", field=name)
    if "dictUri" in params or action.startswith("dict"):
        uri = params.get("dictUri")
        if not (isinstance(uri, str) and DICT_URI.match(uri)):
            return refuse(decision, f"{action}: 'dictUri' must be proxy::<name> (a dict the "
                          "host's configuration declares); file:, other proxy sockets and "
                          "driver URIs reach any file, socket or server: never through a job",
                          rule="dovecot.param.dictUri", field="dictUri")
    if action == "statsDump" and params.get("reset"):
        decision = raise_to(decision, ActionClass.CHANGE, Role.OPERATOR,
                            "reset: true clears the metrics", rule="dovecot.statsDump.reset",
                            field="reset")
    every_user = params.get("allUsers") is True or (
        isinstance(params.get("user"), str) and bool(_WILDCARD.search(params["user"])))
    if every_user and decision.action_class in (ActionClass.CHANGE, ActionClass.DESTRUCTIVE):
        field = "allUsers" if params.get("allUsers") is True else "user"
        decision = raise_to(decision, ActionClass.DESTRUCTIVE, Role.ADMIN,
                            "for every user of the host", rule=f"dovecot.param.{field}",
                            field=field)
    return decision
