#!/usr/bin/env python3
"""Generates schema.tsv, the protobuf schema table embedded by `protobuf/schema.rs`.

Inputs (not committed): the `generated.proto` files and the Go type definitions of
k8s.io/api and k8s.io/apimachinery at one release, laid out as
  API_DIR/<group>/<version>/{generated.proto,*.go}
  MACHINERY_DIR/pkg/.../{generated.proto,*.go}

The .proto files give message structure (field numbers, types, labels). The Go struct tags give
what the JSON encoding does with the same field: its JSON name (which differs from the proto name
for `json:",inline"` embedded structs), `omitempty`, and whether the Go field is a pointer.

Output lines (tab separated):
  K  <apiVersion>  <kind>  <message>             a top-level kind
  F  <message>  <number>  <jsonName>  <type>  <label>  <flags>
     label: one of opt, rep, map (map<string, type>)
     type:  string|int32|int64|bool|bytes|double|float or a message name
     flags: comma separated subset of inline, omitempty, ptr ("-" for none)
Message names drop the "k8s.io.api." / "k8s.io.apimachinery.pkg." prefixes.

Usage: gen_schema.py API_DIR MACHINERY_DIR > schema.tsv
"""
import os
import re
import sys

GROUPS = ["core/v1", "apps/v1", "batch/v1", "events/v1", "coordination/v1", "certificates/v1", "storage/v1",
          "discovery/v1", "policy/v1", "autoscaling/v1", "authentication/v1"]
MACHINERY = ["pkg/apis/meta/v1", "pkg/api/resource", "pkg/runtime", "pkg/util/intstr"]

# (apiVersion, kind) served by the API server, with the proto package holding the message.
KINDS = {
    "v1": ("core.v1", ["Namespace", "Pod", "Service", "Endpoints", "ConfigMap", "Secret",
                       "ServiceAccount", "PersistentVolumeClaim", "PersistentVolume", "Event",
                       "Node", "ReplicationController", "LimitRange", "ResourceQuota",
                       "PodTemplate", "Binding"]),
    "apps/v1": ("apps.v1", ["Deployment", "ReplicaSet", "StatefulSet", "ControllerRevision",
                            "DaemonSet"]),
    "batch/v1": ("batch.v1", ["Job", "CronJob"]),
    "events.k8s.io/v1": ("events.v1", ["Event"]),
    "coordination.k8s.io/v1": ("coordination.v1", ["Lease"]),
    "certificates.k8s.io/v1": ("certificates.v1", ["CertificateSigningRequest"]),
    "storage.k8s.io/v1": ("storage.v1", ["StorageClass"]),
    "discovery.k8s.io/v1": ("discovery.v1", ["EndpointSlice"]),
    "policy/v1": ("policy.v1", ["PodDisruptionBudget", "Eviction"]),
    "autoscaling/v1": ("autoscaling.v1", ["Scale"]),
    "authentication.k8s.io/v1": ("authentication.v1", ["TokenRequest"]),
    "meta.k8s.io/v1": ("apis.meta.v1", ["DeleteOptions"]),
}

# Messages whose JSON form is special; the decoder handles them itself, so their fields are not
# walked for reachability (but are still emitted).
SPECIAL = {"apis.meta.v1.Time", "apis.meta.v1.MicroTime", "apis.meta.v1.Duration",
           "apis.meta.v1.FieldsV1", "api.resource.Quantity", "util.intstr.IntOrString",
           "runtime.RawExtension"}

SCALARS = {"string", "int32", "int64", "bool", "bytes", "double", "float", "uint32", "uint64"}


def short(name):
    name = name.lstrip(".")
    for prefix in ("k8s.io.api.", "k8s.io.apimachinery.pkg."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


FIELD_RE = re.compile(r"^\s*(optional|repeated|required)\s+(\S+)\s+(\w+)\s*=\s*(\d+)")
MAP_RE = re.compile(r"^\s*map<\s*(\S+)\s*,\s*(\S+)\s*>\s+(\w+)\s*=\s*(\d+)")


def parse_proto(path):
    """Returns {message: [(number, protoName, type, label)]}."""
    package = None
    messages = {}
    current = None
    with open(path) as f:
        for line in f:
            line = line.split("//")[0].rstrip()
            m = re.match(r"^package\s+([\w.]+);", line)
            if m:
                package = short(m.group(1))
                continue
            m = re.match(r"^message\s+(\w+)\s*{", line)
            if m:
                current = package + "." + m.group(1)
                messages[current] = []
                continue
            if line.startswith("}"):
                current = None
                continue
            if current is None:
                continue
            m = MAP_RE.match(line)
            if m:
                key, value, name, number = m.groups()
                if key != "string":
                    raise SystemExit(f"{current}.{name}: map key {key} unsupported")
                messages[current].append((int(number), name, resolve(value, package), "map"))
                continue
            m = FIELD_RE.match(line)
            if m:
                label, typ, name, number = m.groups()
                label = "rep" if label == "repeated" else "opt"
                messages[current].append((int(number), name, resolve(typ, package), label))
            elif line.strip() and not line.strip().startswith(("option", "syntax", "import")):
                raise SystemExit(f"{path}: cannot parse {line!r}")
    return messages


def resolve(typ, package):
    if typ in SCALARS:
        return typ
    if "." in typ:
        return short(typ)
    return package + "." + typ


TAG_RE = re.compile(r'`([^`]*)`')


def parse_go(directory, package):
    """Returns {message: {number: (jsonName, omitempty, pointer, inline)}} from Go struct tags."""
    structs = {}
    for fname in sorted(os.listdir(directory)):
        if not fname.endswith(".go") or fname.endswith("_test.go") or fname.startswith("zz_") \
                or fname == "generated.pb.go":
            continue
        current = None
        with open(os.path.join(directory, fname)) as f:
            for line in f:
                m = re.match(r"^type\s+(\w+)\s+struct\s*{", line)
                if m:
                    current = package + "." + m.group(1)
                    structs[current] = {}
                    continue
                if line.startswith("}"):
                    current = None
                    continue
                if current is None:
                    continue
                code = line.split("//")[0] if "`" not in line else line
                tm = TAG_RE.search(code)
                if not tm:
                    continue
                tags = dict(re.findall(r'(\w+):"([^"]*)"', tm.group(1)))
                if "protobuf" not in tags or tags["protobuf"] == "-":
                    continue
                before = code[:tm.start()].split()
                proto = tags["protobuf"].split(",")
                number = int(proto[1])
                json_parts = tags.get("json", "").split(",")
                inline = "inline" in json_parts[1:]
                json_name = "" if inline else json_parts[0]
                if json_name == "" and not inline:
                    json_name = before[0]
                omitempty = "omitempty" in json_parts[1:]
                gotype = before[1] if len(before) > 1 else before[0]
                pointer = gotype.startswith("*")
                structs[current][number] = (json_name, omitempty, pointer, inline)
    return structs


def main():
    api_dir, machinery_dir = sys.argv[1], sys.argv[2]
    messages = {}
    go = {}
    for g in GROUPS:
        package = g.replace("/", ".")
        messages.update(parse_proto(os.path.join(api_dir, g, "generated.proto")))
        go.update(parse_go(os.path.join(api_dir, g), package))
    for p in MACHINERY:
        package = p[len("pkg/"):].replace("/", ".")
        messages.update(parse_proto(os.path.join(machinery_dir, p, "generated.proto")))
        go.update(parse_go(os.path.join(machinery_dir, p), package))

    roots = []
    for api_version, (package, kinds) in KINDS.items():
        for kind in kinds:
            name = package + "." + kind
            if name not in messages:
                raise SystemExit(f"kind {kind}: no message {name}")
            roots.append((api_version, kind, name))

    reachable = []
    seen = set()
    stack = [name for _, _, name in roots]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        reachable.append(name)
        if name in SPECIAL:
            continue
        for _, _, typ, _ in messages[name]:
            if typ not in SCALARS:
                if typ not in messages:
                    raise SystemExit(f"{name}: unknown type {typ}")
                stack.append(typ)

    out = sys.stdout
    for api_version, kind, name in roots:
        out.write(f"K\t{api_version}\t{kind}\t{name}\n")
    for name in sorted(reachable):
        tags = go.get(name, {})
        for number, proto_name, typ, label in messages[name]:
            if name in SPECIAL:
                json_name, omitempty, pointer, inline = proto_name, False, False, False
            else:
                if number not in tags:
                    raise SystemExit(f"{name} field {number} ({proto_name}): no Go struct tag")
                json_name, omitempty, pointer, inline = tags[number]
            flags = [f for f, on in (("inline", inline), ("omitempty", omitempty),
                                     ("ptr", pointer)) if on]
            out.write(f"F\t{name}\t{number}\t{json_name or '-'}\t{typ}\t{label}\t"
                      f"{','.join(flags) or '-'}\n")


if __name__ == "__main__":
    main()
