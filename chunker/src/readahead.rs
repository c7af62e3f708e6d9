//! A reader thread that fills blocks ahead of the chunker, so disk reads and
//! the page-cache copy overlap with boundary scanning and hashing.
//!
//! Each block starts with a copy of the previous block's last `carry_max`
//! bytes, made by the reader thread: a chunk that straddles two reads is still
//! contiguous in the new block, and the chunker never copies. Three blocks
//! circulate through a pool, so memory stays bounded whatever the input size.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};

/// Blocks in circulation: one being chunked, one queued, one being filled.
const BLOCKS: usize = 3;

/// A filled block: `data[..len]` holds input, of which the first `carry` bytes
/// repeat the end of the previous block.
pub(crate) struct Block {
    pub(crate) data: Vec<u8>,
    pub(crate) len: usize,
    pub(crate) carry: usize,
    pub(crate) eof: bool,
}

/// The chunker's end of the read-ahead pipeline.
pub(crate) struct ReadAhead {
    blocks: Receiver<io::Result<Block>>,
    pool: SyncSender<Vec<u8>>,
}

impl ReadAhead {
    /// Starts a reader thread over `reader` with blocks of `carry_max + fresh` bytes.
    pub(crate) fn spawn<R: Read + Send + 'static>(
        reader: R,
        carry_max: usize,
        fresh: usize,
    ) -> io::Result<Self> {
        let (block_tx, blocks) = mpsc::sync_channel(1);
        let (pool, pool_rx) = mpsc::sync_channel(BLOCKS);
        std::thread::Builder::new()
            .name("chunker-read".into())
            .spawn(move || fill_blocks(reader, block_tx, pool_rx, carry_max, carry_max + fresh))?;
        Ok(Self { blocks, pool })
    }

    /// The next block, handing `spent` back for reuse.
    pub(crate) fn next(&mut self, spent: Option<Vec<u8>>) -> io::Result<Block> {
        if let Some(buf) = spent.filter(|b| !b.is_empty()) {
            // The reader may have finished; then nobody needs the buffer.
            let _ = self.pool.try_send(buf);
        }
        self.blocks
            .recv()
            .map_err(|_| io::Error::other("chunker read-ahead thread stopped"))?
    }
}

fn fill_blocks<R: Read>(
    mut reader: R,
    blocks: SyncSender<io::Result<Block>>,
    pool: Receiver<Vec<u8>>,
    carry_max: usize,
    cap: usize,
) {
    let mut allocated = 0;
    let mut prev: Option<Block> = None;
    loop {
        let mut data = match pool.try_recv() {
            Ok(buf) => buf,
            Err(_) if allocated < BLOCKS => {
                allocated += 1;
                vec![0u8; cap]
            }
            Err(_) => match pool.recv() {
                Ok(buf) => buf,
                Err(_) => return, // the chunker is gone
            },
        };
        let mut carry = 0;
        if let Some(p) = prev.take() {
            carry = carry_max.min(p.len);
            data[..carry].copy_from_slice(&p.data[p.len - carry..p.len]);
            if blocks.send(Ok(p)).is_err() {
                return;
            }
        }
        let (len, eof) = match fill(&mut reader, &mut data, carry) {
            Ok(filled) => filled,
            Err(e) => {
                let _ = blocks.send(Err(e));
                return;
            }
        };
        let block = Block {
            data,
            len,
            carry,
            eof,
        };
        if eof {
            let _ = blocks.send(Ok(block));
            return;
        }
        prev = Some(block);
    }
}

/// Reads into `buf[from..]` until it is full or the input ends.
pub(crate) fn fill<R: Read>(
    reader: &mut R,
    buf: &mut [u8],
    from: usize,
) -> io::Result<(usize, bool)> {
    let mut len = from;
    while len < buf.len() {
        match reader.read(&mut buf[len..]) {
            Ok(0) => return Ok((len, true)),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((len, false))
}
