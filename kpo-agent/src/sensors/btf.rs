//! Struct field offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Offsets are resolved by name, descending through anonymous unions and structs, so a field that
//! moves between kernel builds is still found. A field that cannot be resolved stays
//! `KernelOffsets::MISSING` and the sensors that need it are switched off with the reason.
use std::path::Path;

use btf_rs::{Backend, Btf, Type};
use kpo_common::KernelOffsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {reason}{hint}")]
    Unreadable {
        path: String,
        reason: String,
        /// For the default path: the kernel may have been built without BTF.
        hint: &'static str,
    },
}

/// The offsets that were found, and for each missing one a human-readable reason.
#[derive(Debug, Clone)]
pub struct ResolvedOffsets {
    pub offsets: KernelOffsets,
    pub missing: Vec<String>,
    /// Why there is no offset at all: the BTF file could not be read (its error).
    pub unreadable: Option<String>,
}

impl ResolvedOffsets {
    /// No offset, because the BTF could not be read for `reason` (the file's error).
    pub fn none(reason: &str) -> Self {
        Self {
            offsets: KernelOffsets::ALL_MISSING,
            missing: vec![reason.to_string()],
            unreadable: Some(reason.to_string()),
        }
    }

    /// Why a sensor needing the `missing` fields (`sock.skc_family`, ...) is off: the file's
    /// error when the BTF could not be read, else the fields this kernel's BTF lacks.
    pub fn why_missing(&self, missing: &[&str]) -> String {
        match &self.unreadable {
            Some(reason) => reason.clone(),
            None => format!("kernel BTF lacks {}", missing.join(", ")),
        }
    }
}

/// The running kernel's type information, parsed once at start-up.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Maps the file rather than parsing all of it up front: parsing every vmlinux type costs
    /// tens of MB at start-up, and we look up a handful of them. Falls back to reading when the
    /// file cannot be mapped (sysfs allows it only on newer kernels).
    pub fn open(path: &Path) -> Result<KernelBtf, BtfError> {
        let btf = Btf::from_file_with_backend(path, Backend::Mmap)
            .or_else(|_| Btf::from_file_with_backend(path, Backend::Cache))
            .map_err(|e| BtfError::Unreadable {
                path: path.display().to_string(),
                reason: e.to_string(),
                hint: if path == Path::new(VMLINUX_BTF) {
                    // In a pod the kernel may have it and the mount be missing (s60 story BS-10).
                    " (is CONFIG_DEBUG_INFO_BTF enabled? In a container, mount the host's \
                     /sys/kernel/btf, or give --btf PATH)"
                } else {
                    ""
                },
            })?;
        Ok(KernelBtf { btf })
    }

    pub fn offsets(&self) -> ResolvedOffsets {
        resolve_offsets(&self.btf)
    }

    /// True if the kernel declares the raw tracepoint `name` (BTF has `btf_trace_<name>`).
    pub fn has_raw_tracepoint(&self, name: &str) -> bool {
        self.btf
            .resolve_ids_by_name(&format!("btf_trace_{name}"))
            .is_ok_and(|ids| !ids.is_empty())
    }

    /// How many arguments the raw tracepoint `name` passes; None when BTF does not say.
    pub fn raw_tracepoint_args(&self, name: &str) -> Option<usize> {
        raw_tracepoint_args(&self.btf, name)
    }
}

/// `btf_trace_<name>` is `typedef void (*)(void *__data, <the tracepoint's arguments>)`: the
/// first parameter is the probe's own data, not an argument.
fn raw_tracepoint_args(btf: &Btf, name: &str) -> Option<usize> {
    let typedef = btf
        .resolve_types_by_name(&format!("btf_trace_{name}"))
        .ok()?
        .into_iter()
        .find(|t| matches!(t, Type::Typedef(_)))?;
    let Type::Ptr(ptr) = btf.resolve_chained_type(typedef.as_btf_type()?).ok()? else {
        return None;
    };
    let Type::FuncProto(proto) = btf.resolve_chained_type(&ptr).ok()? else {
        return None;
    };
    proto.parameters.len().checked_sub(1)
}

/// Opens the BTF at `path` and resolves every offset.
pub fn resolve(path: &Path) -> Result<ResolvedOffsets, BtfError> {
    Ok(KernelBtf::open(path)?.offsets())
}

fn resolve_offsets(btf: &Btf) -> ResolvedOffsets {
    let mut missing = Vec::new();
    let mut field = |strukt: &str, path: &[&str]| -> u32 {
        match member_offset(btf, strukt, path) {
            Some(off) => off,
            None => {
                missing.push(format!("struct {strukt}.{}", path.join(".")));
                KernelOffsets::MISSING
            }
        }
    };
    let offsets = KernelOffsets {
        sk_family: field("sock", &["__sk_common", "skc_family"]),
        sk_num: field("sock", &["__sk_common", "skc_num"]),
        sk_state: field("sock", &["__sk_common", "skc_state"]),
        sk_net: field("sock", &["__sk_common", "skc_net"]),
        net_inum: field("net", &["ns", "inum"]),
        sk_protocol: field("sock", &["sk_protocol"]),
        sk_ack_backlog: field("sock", &["sk_ack_backlog"]),
        sk_max_ack_backlog: field("sock", &["sk_max_ack_backlog"]),
        napi_dev: field("napi_struct", &["dev"]),
        dev_ifindex: field("net_device", &["ifindex"]),
        // possible_net_t is empty without CONFIG_NET_NS: then `net` is missing, and so is the
        // napi sensor (its keys need the device's namespace).
        dev_nd_net: field("net_device", &["nd_net", "net"]),
    };
    ResolvedOffsets {
        offsets,
        missing,
        unreadable: None,
    }
}

/// Byte offset of `path` inside `struct strukt`, or None if any step is missing or a bitfield.
pub fn member_offset(btf: &Btf, strukt: &str, path: &[&str]) -> Option<u32> {
    let mut current = find_struct(btf, strukt)?;
    let mut total_bits = 0u32;
    for (i, name) in path.iter().enumerate() {
        let (bits, member_type) = find_member(btf, &current, name)?;
        total_bits += bits;
        if i + 1 < path.len() {
            current = strip_to_struct(btf, member_type)?;
        }
    }
    total_bits.is_multiple_of(8).then_some(total_bits / 8)
}

fn find_struct(btf: &Btf, name: &str) -> Option<btf_rs::Struct> {
    btf.resolve_types_by_name(name)
        .ok()?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
}

/// Finds `name` among the members, looking inside anonymous unions/structs. Returns its bit offset
/// relative to `strukt` and its type.
fn find_member(btf: &Btf, strukt: &btf_rs::Struct, name: &str) -> Option<(u32, Type)> {
    for member in &strukt.members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        if member.bitfield_size().is_some_and(|size| size != 0) && member_name == name {
            return None;
        }
        let member_type = btf.resolve_chained_type(member).ok()?;
        if member_name == name {
            return Some((member.bit_offset(), member_type));
        }
        if member_name.is_empty() {
            if let Some(inner) = strip_to_struct(btf, member_type) {
                if let Some((bits, t)) = find_member(btf, &inner, name) {
                    return Some((member.bit_offset() + bits, t));
                }
            }
        }
    }
    None
}

/// Follows typedefs and qualifiers to a struct or union.
fn strip_to_struct(btf: &Btf, mut t: Type) -> Option<btf_rs::Struct> {
    for _ in 0..16 {
        t = match t {
            Type::Struct(s) | Type::Union(s) => return Some(s),
            Type::Typedef(_)
            | Type::Volatile(_)
            | Type::Const(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => btf.resolve_chained_type(t.as_btf_type()?).ok()?,
            _ => return None,
        };
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A BTF blob declaring only the raw tracepoint `name`, with `args` arguments, laid out as
    /// the kernel's: `typedef void (*btf_trace_<name>)(void *, <args>)`.
    pub(crate) fn raw_tracepoint_btf(name: &str, args: u32) -> KernelBtf {
        const PTR: u32 = 2;
        const TYPEDEF: u32 = 8;
        const FUNC_PROTO: u32 = 13;
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        let strings = format!("\0btf_trace_{name}\0");
        // [1] void *; [2] void (void *, args x void *); [3] a pointer to [2]; [4] the typedef.
        let mut types: Vec<u32> = vec![0, info(PTR, 0), 0];
        types.extend([0, info(FUNC_PROTO, args + 1), 0]);
        for _ in 0..=args {
            types.extend([0, 1]);
        }
        types.extend([0, info(PTR, 0), 2]);
        types.extend([1, info(TYPEDEF, 0), 3]);
        let type_len = (types.len() * 4) as u32;
        let mut bytes = Vec::new();
        bytes.extend(0xeb9f_u16.to_le_bytes());
        bytes.extend([1, 0]); // version, flags
        for word in [24, 0, type_len, type_len, strings.len() as u32] {
            bytes.extend(u32::to_le_bytes(word));
        }
        for word in types {
            bytes.extend(word.to_le_bytes());
        }
        bytes.extend(strings.as_bytes());
        KernelBtf {
            btf: Btf::from_bytes(&bytes).expect("a valid BTF blob"),
        }
    }

    #[test]
    fn raw_tracepoint_arguments_leave_out_the_probes_data() {
        let btf = raw_tracepoint_btf("sched_switch", 3);
        assert!(btf.has_raw_tracepoint("sched_switch"));
        assert_eq!(btf.raw_tracepoint_args("sched_switch"), Some(3));
        assert_eq!(btf.raw_tracepoint_args("sched_wakeup"), None);
        assert_eq!(
            raw_tracepoint_btf("sched_switch", 4).raw_tracepoint_args("sched_switch"),
            Some(4)
        );
    }

    #[test]
    fn unreadable_btf_is_a_clear_error() {
        let err = resolve(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }

    /// Defect: an unreadable --btf turned sensors off for "kernel BTF lacks sock.skc_family…"
    /// instead of the file's error.
    #[test]
    fn sensors_off_for_an_unreadable_btf_give_the_files_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        let err = KernelBtf::open(&path).err().expect("no such file");
        let reason = err.to_string();
        assert!(
            reason.starts_with(&format!("cannot read kernel BTF at {}: ", path.display())),
            "{reason}"
        );
        assert!(!reason.contains("CONFIG_DEBUG_INFO_BTF"), "{reason}");
        let resolved = ResolvedOffsets::none(&reason);
        assert_eq!(
            resolved.why_missing(&["sock.skc_family", "sock.skc_num"]),
            reason
        );

        let found = ResolvedOffsets {
            offsets: KernelOffsets::ALL_MISSING,
            missing: Vec::new(),
            unreadable: None,
        };
        assert_eq!(
            found.why_missing(&["sock.skc_family", "sock.skc_num"]),
            "kernel BTF lacks sock.skc_family, sock.skc_num"
        );
    }
}
