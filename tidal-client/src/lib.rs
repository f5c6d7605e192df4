//! A client of Tidal's HTTP API: the wire types ([`wire`]) the server and its clients share,
//! bearer-token helpers ([`auth`]), and a blocking HTTP [`Client`] used by the `tidal` CLI,
//! `tidal bench http` and Forage's remote store.

pub mod auth;
pub mod client;
pub mod wire;

pub use client::{Client, ClientError};
