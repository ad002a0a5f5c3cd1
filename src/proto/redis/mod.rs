//! The redis protocol: command table, request parser, reply parser, and
//! writers of the replies the proxy makes (`reply`).

pub mod command;
pub mod reply;
pub mod request;
pub mod response;

/// Appends `args` as a RESP multibulk request (for AUTH/SELECT the proxy
/// sends on its own).
pub fn write_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        write_bulk(out, a);
    }
}

/// Appends one bulk string `$<len>\r\n<bytes>\r\n`.
pub fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}
