#!/usr/bin/env python3
"""Generates schema_table.rs: the wire layout of every request Freshet serves, for the pre-scan
in schema.rs. It reads the decoders that the kafka-protocol crate generated from Kafka's message
specs, so the pre-scan walks exactly the fields the crate will read, in the same order.

Usage: python3 crates/freshet-protocol/schema_gen.py ~/.cargo/registry/src/*/kafka-protocol-0.18.0 \
           > crates/freshet-protocol/src/schema_table.rs   (not rustfmt-ed: lib.rs skips it)
Add a request module and its api key to REQUESTS when a new API is served.
"""
import re
import sys

# module of the crate -> api key.
REQUESTS = {
    "produce_request": 0, "fetch_request": 1, "list_offsets_request": 2, "metadata_request": 3,
    "offset_commit_request": 8, "offset_fetch_request": 9, "find_coordinator_request": 10,
    "join_group_request": 11, "heartbeat_request": 12, "leave_group_request": 13,
    "sync_group_request": 14, "describe_groups_request": 15, "list_groups_request": 16,
    "delete_groups_request": 42, "offset_delete_request": 47, "api_versions_request": 18, "create_topics_request": 19, "delete_topics_request": 20,
    "delete_records_request": 21, "init_producer_id_request": 22,
    "add_partitions_to_txn_request": 24, "add_offsets_to_txn_request": 25, "end_txn_request": 26,
    "txn_offset_commit_request": 28, "describe_configs_request": 32, "alter_configs_request": 33,
    "describe_log_dirs_request": 35, "create_partitions_request": 37,
    "incremental_alter_configs_request": 44, "describe_quorum_request": 55,
    "describe_cluster_request": 60,
    "consumer_group_heartbeat_request": 68, "consumer_group_describe_request": 69,
    "describe_producers_request": 61, "describe_transactions_request": 65,
    "list_transactions_request": 66, "sasl_handshake_request": 17, "sasl_authenticate_request": 36,
    "describe_topic_partitions_request": 75,
    "describe_user_scram_credentials_request": 50, "alter_user_scram_credentials_request": 51,
    "write_txn_markers_request": 27,
    "elect_leaders_request": 43,
    "offset_for_leader_epoch_request": 23,
    "describe_client_quotas_request": 48, "alter_client_quotas_request": 49,
    "describe_acls_request": 29, "create_acls_request": 30, "delete_acls_request": 31,
    "share_group_heartbeat_request": 76, "share_group_describe_request": 77,
    "share_fetch_request": 78, "share_acknowledge_request": 79,
    "describe_share_group_offsets_request": 90, "alter_share_group_offsets_request": 91,
    "delete_share_group_offsets_request": 92,
    "alter_partition_reassignments_request": 45, "list_partition_reassignments_request": 46,
    "read_share_group_state_request": 84, "write_share_group_state_request": 85,
}

DECODE = re.compile(
    r"types::([A-Za-z0-9]+)(?:\((types::[A-Za-z0-9]+(?: \{ version \})?)\))?(?: \{ version \})?"
    r"\.decode\((?:&mut )?buf\)\?"
)
PRIMS = {
    "Int8": "Ty::Int8", "Int16": "Ty::Int16", "UInt16": "Ty::Int16", "Int32": "Ty::Int32",
    "UInt32": "Ty::Int32", "Int64": "Ty::Int64", "Float64": "Ty::Int64", "Boolean": "Ty::Int8",
    "Uuid": "Ty::Uuid", "String": "Ty::String", "CompactString": "Ty::CompactString",
    "Bytes": "Ty::Bytes", "CompactBytes": "Ty::CompactBytes",
}


def blocks(src, opener):
    """Yields (name, body) of every `opener NAME {` block, by brace matching."""
    for m in re.finditer(opener + r" (\w+) \{", src):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(src[i], 0)
            i += 1
        yield m.group(1), src[m.end():i - 1]


def cond_fn(text):
    expr = text.replace("&&", " and ").replace("||", " or ")
    return lambda v, e=expr: eval(e, {}, {"version": v})


def parse_decoder(body):
    """Returns (leaves, tagged_conds): leaves are (name, tag, type, elem, conds)."""
    stack, leaves, tagged_conds, current = [], [], None, None
    for raw in body.splitlines():
        line = DECODE.sub(lambda m: "@%s|%s@" % (m.group(1), (m.group(2) or "").replace(" { version }", "")), raw.strip())
        conds = [c for c in stack if callable(c)]
        tag = next((t for t in reversed(stack) if isinstance(t, tuple)), None)
        m = re.match(r"let (?:mut )?(\w+)(?:: \w+)? = if (.*) \{$", line)
        if m:
            current = m.group(1)
            stack.append(cond_fn(m.group(2)))
            continue
        if line.startswith("} else {"):
            c = stack.pop()
            stack.append(lambda v, c=c: not c(v))
            continue
        m = re.match(r"if (.*) \{$", line)
        if m:
            stack.append(cond_fn(m.group(1)))
            continue
        m = re.match(r"(\d+) => \{$", line)
        if m:
            stack.append(("tag", int(m.group(1))))
            continue
        if line.startswith("_ => {"):
            stack.append(("tag", None))
            continue
        if "num_tagged_fields = @UnsignedVarInt" in line:
            tagged_conds = conds
            continue
        d = re.search(r"@(\w+)\|([^@]*)@", line)
        if d and d.group(1) != "UnsignedVarInt":
            m = re.match(r"(?:let (?:mut )?)?(\w+)(?:: [\w:<>]+)? = @", line)
            name = m.group(1) if m else current
            leaves.append((name, tag[1] if tag else None, d.group(1), d.group(2), conds))
        opens, closes = line.count("{"), line.count("}")
        for _ in range(closes):
            if stack:
                stack.pop()
        for _ in range(opens):
            stack.append(None)
    return leaves, tagged_conds


def ranges(pred, lo, hi):
    out, start = [], None
    for v in range(lo, hi + 2):
        ok = v <= hi and pred(v)
        if ok and start is None:
            start = v
        if not ok and start is not None:
            out.append((start, v - 1))
            start = None
    return out


def main(crate):
    out = ["// Generated by crates/freshet-protocol/schema_gen.py from the decoders of kafka-protocol 0.18.0",
           "// (themselves generated from Kafka 4.1's message specs). Do not edit by hand.",
           "//! The wire layout of each served request, for the pre-scan in `schema`.",
           "", "use super::schema::{Field, StructSchema, Tagged, Ty};", ""]
    roots = []
    for module in REQUESTS:
        src = open(f"{crate}/src/messages/{module}.rs").read()
        lo, hi = map(int, re.search(r"const VERSIONS: VersionRange = VersionRange \{ min: (\d+), max: (\d+) \}", src).groups())
        key = REQUESTS[module]
        root = "".join(w.capitalize() for w in module.split("_"))
        decl = {}
        for name, body in blocks(src, "pub struct"):
            decl[name] = dict(re.findall(r"pub (\w+): ([^,\n]+),", body))
        prefix = module.upper()
        for name, body in blocks(src, "impl Decodable for"):
            leaves, tagged_conds = parse_decoder(body)
            fields, tagged = [], []
            for fname, tag, ty, elem, conds in leaves:
                pred = lambda v, cs=conds: all(c(v) for c in cs)
                rust_ty = PRIMS.get(ty)
                if ty == "OptionStruct":
                    inner = re.sub(r"Option<|>|super::", "", decl[name][fname]).strip()
                    rust_ty = f"Ty::OptionStruct(&{prefix}_{inner.upper()})"
                if ty in ("Array", "CompactArray", "Struct"):
                    inner = re.sub(r"Option<|Vec<|>|super::|indexmap::IndexMap<[^,]*, ", "", decl[name][fname]).strip()
                    if ty == "Struct" or elem.startswith("types::Struct"):
                        inner_ty = f"Ty::Struct(&{prefix}_{inner.upper()})"
                    else:
                        inner_ty = PRIMS[elem.replace("types::", "")]
                    rust_ty = inner_ty if ty == "Struct" else f"Ty::{ty}(&{inner_ty})"
                assert rust_ty, (module, name, fname, ty)
                for a, b in ranges(pred, lo, hi):
                    if tag is None:
                        fields.append(f"Field {{ ty: {rust_ty}, min: {a}, max: {b} }}, // {fname}")
                    else:
                        tagged.append(f"Tagged {{ tag: {tag}, ty: {rust_ty}, min: {a}, max: {b} }}, // {fname}")
            tf = ranges(lambda v: all(c(v) for c in tagged_conds), lo, hi) if tagged_conds is not None else []
            tagged_from = tf[0][0] if tf else "i16::MAX"
            assert len(tf) <= 1 and (not tf or tf[0][1] == hi), (module, name, tf)
            out.append(f"pub(crate) static {prefix}_{name.upper()}: StructSchema = StructSchema {{")
            out.append(f'    name: "{name}", tagged_from: {tagged_from},')
            out.append(f"    memory_bytes: std::mem::size_of::<kafka_protocol::messages::{module}::{name}>(),")
            out.append("    fields: &[" + "".join("\n        " + f for f in fields) + "\n    ],")
            out.append("    tagged: &[" + "".join("\n        " + t for t in tagged) + "\n    ],")
            out.append("};\n")
            if name == root:
                roots.append((key, f"{prefix}_{name.upper()}", lo, hi))
    out.append("/// The schema of the request with api key `key`, if it is served.")
    out.append("pub(crate) fn request_schema(key: i16) -> Option<&'static StructSchema> {")
    out.append("    match key {")
    for key, static, lo, hi in roots:
        out.append(f"        {key} => Some(&{static}), // versions {lo}-{hi}")
    out.append("        _ => None,\n    }\n}")
    print("\n".join(out))


main(sys.argv[1])
