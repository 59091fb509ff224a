//! SOCKS5 (RFC 1928) CONNECT, with username/password authentication (RFC 1929) used only to
//! name the client.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::proxy::Proxy;

pub(crate) async fn serve(_proxy: &Arc<Proxy>, _stream: TcpStream, _peer: SocketAddr) {}
