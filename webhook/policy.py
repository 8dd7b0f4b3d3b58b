"""Load and validate the policy (``rules/*.yaml``).

The policy holds *modes and settings*: who counts as an agent, the global mode, and each guard
family's section. Every problem is reported as ``file: field: problem`` so an operator can fix a
ConfigMap without reading a traceback, and a reload that fails leaves the caller's last good policy
untouched (loading is a pure function; swapping is the caller's business).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import pydantic
import yaml
from pydantic import alias_generators

from webhook import approvals, attributes, exemptions, guards, podspec, schema
from webhook.guards import Registry, base

GlobalMode = Literal["enforce", "dry-run"]
API_VERSION = "agent-guard.io/v1alpha1"
KIND = "Policy"
DEFAULT_GUARD_NAMESPACE = "agent-guard-system"


class PolicyError(Exception):
    """A policy that cannot be used; ``str()`` is one ``file: field: problem`` line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        # PyYAML raises a bare ValueError for 2026-13-01; make it a YAML error that names the line.
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid date {node.value!r} ({exc})", node.start_mark
            ) from exc


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _UniqueKeyLoader.construct_yaml_timestamp)


class ExtraMatch(schema.PolicyModel):
    """Match callers whose ``userInfo.extra[key]`` contains ``value`` (e.g. a credential id)."""

    key: str = pydantic.Field(min_length=1)
    value: str = pydantic.Field(min_length=1)


class AgentSelector(schema.PolicyModel):
    """Who is an agent. Any one match is enough."""

    service_accounts: tuple[str, ...] = ()  # "namespace/name", "*" wildcards allowed in both parts
    usernames: tuple[str, ...] = ()
    username_prefixes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    extra: tuple[ExtraMatch, ...] = ()

    @pydantic.field_validator("service_accounts")
    @classmethod
    def _namespace_slash_name(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if attributes.split_namespace_name(item) is None:
                raise ValueError(f"{item!r} must be 'namespace/name' (wildcards '*' allowed)")
        return value

    @property
    def empty(self) -> bool:
        return not (
            self.service_accounts or self.usernames or self.username_prefixes or self.groups or self.extra
        )


class PodTemplateKind(schema.PolicyModel):
    """A custom kind whose objects carry pod specs a controller will run, and where they sit."""

    group: str  # "" for the core group
    resource: str = pydantic.Field(min_length=1)  # the plural resource name, e.g. "rollouts"
    paths: tuple[str, ...] = pydantic.Field(min_length=1)  # e.g. "spec.template.spec", "spec.items[*]"

    @pydantic.field_validator("paths")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            podspec.parse_path(path)
        return value


class PodTemplates(schema.PolicyModel):
    """Pod specs in kinds the built-in table (``podspec.TEMPLATE_PATHS``) does not know.

    ``kinds`` adds paths per kind (judged by every pod-spec guard and routed by the rendered webhook
    rules); ``detect: true`` also judges any other kind with a ``containers`` list at a usual place.
    """

    kinds: tuple[PodTemplateKind, ...] = ()
    detect: bool = False

    def table(self) -> dict[tuple[str, str], tuple[str, ...]]:
        found: dict[tuple[str, str], tuple[str, ...]] = {}
        for kind in self.kinds:
            key = (kind.group, kind.resource)
            found[key] = found.get(key, ()) + kind.paths
        return found


class _Document(schema.PolicyModel):
    """One policy file. Sections may be split across files; each may appear in one file only."""

    api_version: Literal["agent-guard.io/v1alpha1"]
    kind: Literal["Policy"]
    mode: GlobalMode | None = None
    guard_namespace: str | None = None
    agents: AgentSelector | None = None
    pod_templates: PodTemplates | None = None
    guards: dict[str, dict[str, Any]] = pydantic.Field(default_factory=dict)
    # Named apart from the ``exemptions`` module, which pydantic must resolve in this class body.
    exemption_specs: tuple[exemptions.Spec, ...] = pydantic.Field(default=(), alias="exemptions")
    approval_rules: tuple[approvals.Rule, ...] = pydantic.Field(default=(), alias="approvals")


def _shipped() -> Registry:
    return guards.discover()


@dataclasses.dataclass(frozen=True)
class Policy:
    """A validated, merged policy. Immutable: reloading builds a new one."""

    mode: GlobalMode
    agents: AgentSelector
    guards: Mapping[str, base.GuardSettings]
    guard_namespace: str = DEFAULT_GUARD_NAMESPACE
    sources: tuple[str, ...] = ()
    forced: bool = False  # mode came from the command line and overrides per-guard modes
    exemptions: tuple[exemptions.Exemption, ...] = ()  # from every file, in file order
    pod_templates: PodTemplates = dataclasses.field(default_factory=PodTemplates)
    approvals: tuple[approvals.Rule, ...] = ()  # which findings a human may approve (from every file)
    # The families the policy was validated against; the engine and the manifests use these.
    families: Registry = dataclasses.field(default_factory=_shipped, repr=False)

    def mode_of(self, guard_id: str) -> schema.Mode:
        """The effective mode of a guard: its own, else the global one; a forced mode wins (except off)."""
        own = self.guards[guard_id].mode
        if own == "off":
            return "off"
        if self.forced:
            return self.mode
        return own or self.mode

    def with_mode(self, mode: GlobalMode) -> Policy:
        """The same policy with every guard that is not off forced into ``mode`` (``--mode``).

        ``--mode dry-run`` must mean "nothing is enforced", whatever single guards say.
        """
        return dataclasses.replace(self, mode=mode, forced=True)


def _field(loc: Iterable[int | str]) -> str:
    return ".".join(str(part) for part in loc) or "(document)"


def _problems(source: str, error: pydantic.ValidationError, prefix: Sequence[str] = ()) -> list[str]:
    problems = []
    for item in error.errors():
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "literal_error" and item["loc"][-1:] in (("apiVersion",), ("kind",)):
            message = f"{message} (this file must declare apiVersion: {API_VERSION}, kind: {KIND})"
        problems.append(f"{source}: {_field([*prefix, *item['loc']])}: {message}")
    return problems


def policy_files(path: Path) -> list[Path]:
    """The files ``load`` reads: a directory's ``*.yaml``/``*.yml`` (sorted), or ``path`` itself."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def _read_documents(path: Path) -> list[tuple[str, Any]]:
    if path.is_dir():
        files = policy_files(path)
        if not files:
            raise PolicyError([f"{path}: (directory): no *.yaml policy files found"])
    elif path.is_file():
        files = [path]
    else:
        raise PolicyError([f"{path}: (path): no such file or directory"])
    documents: list[tuple[str, Any]] = []
    for file in files:
        try:
            loaded = list(yaml.load_all(file.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "(document)"
            problem = getattr(exc, "problem", None) or str(exc)
            raise PolicyError([f"{file}: {where}: invalid YAML: {problem}"]) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError([f"{file}: (file): cannot read: {exc}"]) from exc
        documents.extend((str(file), doc) for doc in loaded if doc is not None)
    return documents


_G = TypeVar("_G", exemptions.Spec, approvals.Rule)


def _known_guards(
    source: str, section: str, items: Sequence[_G], known: Mapping[str, Any], problems: list[str]
) -> list[tuple[int, _G]]:
    """``(index, item)`` of a list whose items name a guard; unknown guard ids become problems."""
    found = []
    for index, item in enumerate(items):
        if item.guard in known:
            found.append((index, item))
        else:
            problems.append(
                f"{source}: {section}.{index}.guard: unknown guard id {item.guard!r} "
                f"(known: {', '.join(sorted(known))})"
            )
    return found


def load(path: Path | str, mode: GlobalMode | None = None, families: Registry | None = None) -> Policy:
    """Load a policy file or a directory of them; raise PolicyError naming file, field and problem.

    ``families`` are the guard families the policy may configure (default: the shipped ones,
    ``guards.discover()``); every one of them gets its settings, defaulted when the policy is silent.
    """
    registry = families if families is not None else guards.discover()
    problems: list[str] = []
    parsed: list[tuple[str, _Document]] = []
    for source, raw in _read_documents(Path(path)):
        if not isinstance(raw, dict):
            problems.append(f"{source}: (document): expected a mapping, got {type(raw).__name__}")
            continue
        try:
            parsed.append((source, _Document.model_validate(raw)))
        except pydantic.ValidationError as exc:
            problems.extend(_problems(source, exc))
    if problems:
        raise PolicyError(problems)

    seen: dict[str, str] = {}
    merged: dict[str, Any] = {}
    raw_guards: dict[str, tuple[str, dict[str, Any]]] = {}
    granted: list[exemptions.Exemption] = []
    approvable: list[approvals.Rule] = []
    known = registry.by_id
    for source, document in parsed:
        for section in ("mode", "guard_namespace", "agents", "pod_templates"):
            value = getattr(document, section)
            if value is None:
                continue
            if section in seen:
                camel = alias_generators.to_camel(section)
                problems.append(f"{source}: {camel}: already set in {seen[section]}")
            seen[section] = source
            merged[section] = value
        for guard_id, settings in document.guards.items():
            if guard_id in raw_guards:
                problems.append(f"{source}: guards.{guard_id}: already set in {raw_guards[guard_id][0]}")
            raw_guards[guard_id] = (source, settings if settings is not None else {})
        # Exemptions are the one list that may be split across files (e.g. one file per team).
        for index, spec in _known_guards(source, "exemptions", document.exemption_specs, known, problems):
            granted.append(exemptions.Exemption.from_spec(spec, f"{Path(source).name}#exemptions[{index}]"))
        approvable.extend(
            rule for _, rule in _known_guards(source, "approvals", document.approval_rules, known, problems)
        )

    settings_by_id: dict[str, base.GuardSettings] = {}
    for guard_id, (source, raw) in raw_guards.items():
        family = known.get(guard_id)
        if family is None:
            problems.append(
                f"{source}: guards.{guard_id}: unknown guard id (known: {', '.join(sorted(known))})"
            )
            continue
        try:
            settings_by_id[guard_id] = family.settings.model_validate(raw)
        except pydantic.ValidationError as exc:
            problems.extend(_problems(source, exc, ("guards", guard_id)))
    agents: AgentSelector | None = merged.get("agents")
    if agents is None or agents.empty:
        where = seen.get("agents", ", ".join(s for s, _ in parsed) or str(path))
        problems.append(f"{where}: agents: no agent identities defined; the guard would judge nobody")
    if problems or agents is None:
        raise PolicyError(problems)

    for family in known.values():
        settings_by_id.setdefault(family.id, family.settings())
    loaded = Policy(
        mode=merged.get("mode", "enforce"),
        agents=agents,
        guards=settings_by_id,
        guard_namespace=merged.get("guard_namespace", DEFAULT_GUARD_NAMESPACE),
        sources=tuple(dict.fromkeys(source for source, _ in parsed)),
        exemptions=tuple(granted),
        pod_templates=merged.get("pod_templates", PodTemplates()),
        approvals=tuple(approvable),
        families=registry,
    )
    return loaded.with_mode(mode) if mode else loaded
