# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate rendered Kubernetes manifests before anything is applied to a cluster.

Every role of the collection renders its objects into a directory (one YAML file per object plus a
``kustomization.yaml``). This module checks such a directory the way a strict API server would:

- core kinds (CronJob, Job, ServiceAccount, Role, ...) against the Kubernetes OpenAPI schemas of one
  pinned Kubernetes version, with kubernetes-validate in strict mode, so an unknown field fails;
- custom resources against the ``openAPIV3Schema`` of their upstream CustomResourceDefinition (the
  files under ``playbooks/files/crds``, listed in its ``index.json``), made strict the way ``kubectl apply
  --validate=strict`` treats a structural schema: an object that lists ``properties`` and neither
  ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` rejects unknown fields
  (Kubernetes docs, "Custom Resource Definitions", sections "Specifying a structural schema" and
  "Field pruning"); ``metadata`` is checked against the core ObjectMeta schema;
- Argo Events objects also against upstream's full JSON Schema (``argo-events-jsonschema.json``),
  because the Argo CRDs only check the top level; the resource a Sensor's k8s trigger creates is
  validated as an object of its own;
- ``kustomization.yaml`` lists exactly the object files of the directory.

CEL rules (``x-kubernetes-validations``) are not evaluated: no pure-Python validator implements them.
"""

from __future__ import annotations

import json
import os

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.requirements import require_library

try:
    import yaml
    import jsonschema
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils
    HAS_VALIDATORS = True
    VALIDATORS_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised through require_validators
    HAS_VALIDATORS = False
    VALIDATORS_IMPORT_ERROR = exc

# The Kubernetes release whose OpenAPI schemas core kinds are checked against. CloudNativePG 1.30
# supports 1.31 to 1.34; keep this inside the range the collection's users run.
DEFAULT_KUBERNETES_VERSION = '1.33'
KUSTOMIZATION_FILE = 'kustomization.yaml'
ARGO_JSON_SCHEMA = os.path.join('argoproj.io', 'argo-events-jsonschema.json')


def require_validators():
    """Raise :class:`PgopsError` naming the Python packages validation needs when one is missing."""
    require_library('kubernetes-validate', HAS_VALIDATORS, 'pip install kubernetes-validate (it brings PyYAML and jsonschema)',
                    str(VALIDATORS_IMPORT_ERROR), reason='to validate manifests')


def strict_schema(schema):
    """Return a deep copy of an OpenAPI v3 / JSON Schema in which objects reject unknown fields.

    A node that declares ``properties`` gets ``additionalProperties: false`` unless it already says what
    extra keys may hold or carries ``x-kubernetes-preserve-unknown-fields: true`` (then unknown fields
    are kept by the API server, so they are legal). ``nullable: true`` (OpenAPI 3.0) becomes an
    explicit ``null`` type, which JSON Schema validators do not infer.

    :param schema: dict, list or scalar (a schema or part of one); not modified.
    :returns: the strict copy.
    """
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict_schema(value) for key, value in schema.items()}
    if ('properties' in out and 'additionalProperties' not in out
            and not out.get('x-kubernetes-preserve-unknown-fields')):
        out['additionalProperties'] = False
    if out.get('nullable') is True and isinstance(out.get('type'), str):
        out['type'] = [out['type'], 'null']
    return out


def _gvk(obj):
    """``(group, version, kind)`` of a manifest dict; ``group`` is ``''`` for the core API group."""
    api_version = str(obj.get('apiVersion') or '')
    group, _sep, version = api_version.rpartition('/')
    return group, version, str(obj.get('kind') or '')


def _path_of(error):
    """A ``spec.jobTemplate.spec[0]``-style path for a jsonschema error (``<root>`` for the top)."""
    parts = []
    for item in error.absolute_path:
        if isinstance(item, int):
            parts.append('[%d]' % item)
        else:
            parts.append(('.' if parts else '') + str(item))
    return ''.join(parts) or '<root>'


def _schema_errors(validator, obj):
    """Every error of ``validator`` on ``obj`` as ``'path: message'`` strings, in a stable order."""
    errors = ['%s: %s' % (_path_of(err), err.message) for err in validator.iter_errors(obj)]
    return sorted(set(errors))


class SchemaCatalog(object):
    """The schemas custom resources are validated against, loaded from a CRD directory.

    :param crd_dir: directory laid out like ``playbooks/files/crds``: ``index.json`` mapping
        ``group/version/Kind`` to ``{"file": "<group>/<plural>.yaml", ...}``, the CRD YAML files, and
        optionally ``argoproj.io/argo-events-jsonschema.json``.
    :raises PgopsError: when the directory or its index is missing or unreadable.
    """

    def __init__(self, crd_dir):
        require_validators()
        self.crd_dir = crd_dir
        index_path = os.path.join(crd_dir, 'index.json')
        try:
            with open(index_path, encoding='utf-8') as handle:
                self.index = json.load(handle)
        except (OSError, ValueError) as exc:
            raise PgopsError('crd_dir %s has no readable index.json (%s); point crd_dir at a copy of the '
                             "collection's playbooks/files/crds directory" % (crd_dir, exc))
        self._crd_validators = {}
        self._extra = self._load_extra_schemas()

    def _load_extra_schemas(self):
        """Full JSON Schemas for kinds whose CRD checks only the top level (Argo Events)."""
        path = os.path.join(self.crd_dir, ARGO_JSON_SCHEMA)
        if not os.path.exists(path):
            return {}
        with open(path, encoding='utf-8') as handle:
            definitions = strict_schema(json.load(handle)['definitions'])
        extra = {}
        for name, definition in definitions.items():
            for gvk in definition.get('x-kubernetes-group-version-kind', []):
                if gvk['group'] == 'argoproj.io':
                    schema = {'$ref': '#/definitions/%s' % name, 'definitions': definitions}
                    key = '%s/%s/%s' % (gvk['group'], gvk['version'], gvk['kind'])
                    extra[key] = jsonschema.Draft4Validator(schema)
        return extra

    def knows(self, group, version, kind):
        """True when ``group/version/Kind`` has a CRD in the catalog."""
        return '%s/%s/%s' % (group, version, kind) in self.index

    def crd_validator(self, group, version, kind):
        """A strict Draft 4 validator for the ``openAPIV3Schema`` of one served CRD version (cached)."""
        key = '%s/%s/%s' % (group, version, kind)
        if key not in self._crd_validators:
            entry = self.index[key]
            with open(os.path.join(self.crd_dir, entry['file']), encoding='utf-8') as handle:
                crd = next(doc for doc in yaml.safe_load_all(handle) if doc)
            served = [v for v in crd['spec']['versions'] if v['name'] == version and v.get('served', True)]
            if not served:
                raise PgopsError('%s: the CRD in %s does not serve version %s' % (key, entry['file'], version))
            schema = strict_schema(served[0]['schema']['openAPIV3Schema'])
            # metadata is checked on its own against ObjectMeta (see validate_object).
            schema.setdefault('properties', {})['metadata'] = {'type': 'object'}
            # OpenAPI 3.0 keeps draft 4's boolean exclusiveMinimum / exclusiveMaximum.
            self._crd_validators[key] = jsonschema.Draft4Validator(schema)
        return self._crd_validators[key]

    def extra_validator(self, group, version, kind):
        """The full JSON Schema validator for ``group/version/Kind``, or ``None``."""
        return self._extra.get('%s/%s/%s' % (group, version, kind))


def _core_errors(obj, kubernetes_version):
    """Errors of a core kind under kubernetes-validate's strict schemas; ``None`` if it has no schema."""
    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kv_utils.SchemaNotFoundError:
        return None
    except kv_utils.ValidationError as exc:
        # kubernetes-validate stops at jsonschema's best-matching error; the object may have more.
        return ['%s: %s' % (_path_of(exc), exc.message)]
    return []


def _metadata_errors(obj, kubernetes_version):
    """Check a custom resource's ``metadata`` against the core ObjectMeta schema (via a ConfigMap)."""
    probe = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': obj.get('metadata') or {}}
    return _core_errors(probe, kubernetes_version) or []


def _embedded_objects(obj):
    """Objects a manifest carries inside it and that the API server will create later.

    An Argo Events Sensor's ``k8s`` trigger holds the full resource it creates under
    ``spec.triggers[].template.k8s.source.resource``; the Sensor's own schema allows any object there.
    :returns: list of ``(label, object)``.
    """
    if _gvk(obj)[::2] != ('argoproj.io', 'Sensor'):
        return []
    found = []
    for trigger in (obj.get('spec') or {}).get('triggers') or []:
        template = (trigger or {}).get('template') or {}
        resource = (((template.get('k8s') or {}).get('source') or {}).get('resource'))
        if isinstance(resource, dict):
            found.append(('trigger %s' % template.get('name'), resource))
    return found


def validate_object(obj, catalog, kubernetes_version=DEFAULT_KUBERNETES_VERSION):
    """Validate one manifest.

    :param obj: the object as a dict (``apiVersion``, ``kind``, ``metadata``, ...).
    :param catalog: :class:`SchemaCatalog` for custom resources.
    :param kubernetes_version: ``'1.33'``-style Kubernetes version for the core schemas.
    :returns: list of error strings (``'path: message'``, or ``'<label>: path: message'`` for an
        embedded object); empty when the object is valid.
    """
    if not isinstance(obj, dict) or not obj.get('apiVersion') or not obj.get('kind'):
        return ['<root>: not a Kubernetes object (apiVersion and kind are required)']
    group, version, kind = _gvk(obj)
    errors = _core_errors(obj, kubernetes_version)
    if errors is None:
        if not catalog.knows(group, version, kind):
            return ['<root>: no schema for %s %s: not a core kind of Kubernetes %s and no CRD for it in %s'
                    % (obj['apiVersion'], kind, kubernetes_version, catalog.crd_dir)]
        errors = _schema_errors(catalog.crd_validator(group, version, kind), obj)
        errors += _metadata_errors(obj, kubernetes_version)
        extra = catalog.extra_validator(group, version, kind)
        if extra is not None:
            errors += [e for e in _schema_errors(extra, obj) if e not in errors]
    for label, embedded in _embedded_objects(obj):
        errors += ['%s: %s' % (label, e) for e in validate_object(embedded, catalog, kubernetes_version)]
    return errors


def _load_file(path):
    """Parse a YAML file into its non-empty documents; a syntax error becomes one error string."""
    try:
        with open(path, encoding='utf-8') as handle:
            return [doc for doc in yaml.safe_load_all(handle) if doc is not None], None
    except (OSError, yaml.YAMLError) as exc:
        return [], 'cannot parse: %s' % exc


def _kustomization_errors(directory, object_files):
    """Compare ``kustomization.yaml``'s ``resources`` with the object files of ``directory``."""
    path = os.path.join(directory, KUSTOMIZATION_FILE)
    if not os.path.exists(path):
        return []
    docs, error = _load_file(path)
    if error:
        return [error]
    listed = (docs[0] if docs else {}).get('resources') or []
    errors = ['lists %s, which does not exist' % name for name in listed
              if not os.path.exists(os.path.join(directory, name))]
    errors += ['does not list %s' % name for name in sorted(object_files) if name not in listed]
    return errors


def manifest_files(paths):
    """Expand files and directories into a sorted list of ``.yaml`` / ``.yml`` files.

    :raises PgopsError: when a path does not exist.
    """
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += [os.path.join(path, name) for name in sorted(os.listdir(path))
                      if name.endswith(('.yaml', '.yml'))]
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise PgopsError('path %s does not exist; give the directory a role rendered its manifests into' % path)
    return found


def validate_paths(paths, crd_dir, kubernetes_version=DEFAULT_KUBERNETES_VERSION):
    """Validate every object in the given files and directories.

    :param paths: list of manifest files and/or directories (a directory's ``kustomization.yaml`` is
        checked against the files beside it).
    :param crd_dir: CRD directory for :class:`SchemaCatalog`.
    :param kubernetes_version: Kubernetes version of the core schemas.
    :returns: dict ``{"valid": bool, "kubernetes_version": str, "objects": [{"file", "kind",
        "name", "valid", "errors": [str]}], "errors": ["file: message", ...]}``.
    :raises PgopsError: for a missing path or CRD directory, or a Kubernetes version
        kubernetes-validate does not know.
    """
    require_validators()
    if kubernetes_version not in {kv_utils.major_minor(v) for v in kv_utils.all_versions()}:
        raise PgopsError('kubernetes_version %s is not one kubernetes-validate %s has schemas for; use one of %s'
                         % (kubernetes_version, getattr(kubernetes_validate, '__version__', ''),
                            ', '.join(sorted({kv_utils.major_minor(v) for v in kv_utils.all_versions()}))))
    catalog = SchemaCatalog(crd_dir)
    objects, errors = [], []
    for path in manifest_files(paths):
        name = os.path.basename(path)
        docs, error = _load_file(path)
        if error:
            errors.append('%s: %s' % (path, error))
            continue
        if name == KUSTOMIZATION_FILE:
            continue
        for obj in docs:
            obj_errors = validate_object(obj, catalog, kubernetes_version)
            metadata = obj.get('metadata') if isinstance(obj, dict) else None
            objects.append({'file': path, 'kind': obj.get('kind') if isinstance(obj, dict) else None,
                            'name': (metadata or {}).get('name') or (metadata or {}).get('generateName'),
                            'valid': not obj_errors, 'errors': obj_errors})
            errors += ['%s: %s %s' % (path, objects[-1]['kind'], e) for e in obj_errors]
    for directory in [p for p in paths if os.path.isdir(p)]:
        object_files = [n for n in os.listdir(directory)
                        if n.endswith(('.yaml', '.yml')) and n != KUSTOMIZATION_FILE]
        errors += ['%s: %s' % (os.path.join(directory, KUSTOMIZATION_FILE), e)
                   for e in _kustomization_errors(directory, object_files)]
    return {'valid': not errors, 'kubernetes_version': kubernetes_version, 'objects': objects, 'errors': errors}


def module_spec():
    """The ``AnsibleModule`` arguments of ``manifest_validate``."""
    return dict(argument_spec=dict(
        paths=dict(type='list', elements='path', required=True),
        crd_dir=dict(type='path', required=True),
        kubernetes_version=dict(type='str', default=DEFAULT_KUBERNETES_VERSION),
        fail_on_invalid=dict(type='bool', default=True),
    ))


def validate_manifests(params, check_mode=False):
    """Run ``manifest_validate``: validate the manifests under ``params['paths']`` (:func:`validate_paths`); it only
    reads, so check mode changes nothing.

    :returns: dict, the module result (never changed).
    :raises PgopsError: with ``fail_on_invalid``, when any manifest is invalid (the result in the details).
    """
    result = validate_paths(params['paths'], params['crd_dir'], params['kubernetes_version'])
    result['changed'] = False
    if params['fail_on_invalid'] and not result['valid']:
        raise PgopsError('%d manifest error(s): %s' % (len(result['errors']), '; '.join(result['errors'])), **result)
    return result
