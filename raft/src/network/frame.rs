//! Length-prefixed frames: a u32 big-endian length, then that many bytes of one
//! codec-encoded message.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    // One buffer, one write: with TCP_NODELAY a separate header would go out as its own
    // packet.
    let mut buf = Vec::with_capacity(4 + payload.len());
    append_frame(&mut buf, payload)?;
    write_frames(w, &buf).await
}

/// Adds one frame to `buf`, for several frames to go out in one write (`write_frames`).
pub fn append_frame(buf: &mut Vec<u8>, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than u32"))?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    Ok(())
}

/// Writes frames made by `append_frame` and flushes them.
pub async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, frames: &[u8]) -> io::Result<()> {
    w.write_all(frames).await?;
    w.flush().await
}

/// Reads one frame of at most `max` bytes. A longer length is refused before anything is
/// allocated. A clean end of stream before the length is `UnexpectedEof`.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {max}-byte limit"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}
