//! The gRPC and protobuf code generated from `proto/deskmail/v1/*.proto` (package
//! `deskmail.v1`), and the encoded file descriptor set for server reflection.
//! Only `deskmail-config`, `deskmail-configd` and `deskmail-cli` should depend on it:
//! domain logic works on `deskmail-core` types, not prost ones.

#![allow(clippy::all)] // generated code

pub mod v1 {
    tonic::include_proto!("deskmail.v1");
}

/// The encoded `FileDescriptorSet` of every deskmail proto, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("deskmail_descriptor");
