import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OciLayout, Store } from '../../src/store/index.js';
import { OciArchiveSource, OciArchiveTarget } from '../../src/archive/index.js';
import type { Descriptor } from '../../src/oci/index.js';
import { targetConformance } from './suite.js';

async function flipByte(path: string): Promise<void> {
  const h = await open(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, 10);
    b[0] = (b[0] ?? 0) ^ 0xff;
    await h.write(b, 0, 1, 10);
  } finally {
    await h.close();
  }
}

targetConformance('OciLayout', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'archway-conf-oci-'));
  const layout = await OciLayout.open(dir, { create: true });
  return {
    target: layout,
    corrupt: (d: Descriptor) => flipByte(layout.blobPath(d.digest)),
    reopen: async () => OciLayout.open(dir),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

targetConformance('Store', async () => {
  const home = await mkdtemp(join(tmpdir(), 'archway-conf-store-'));
  const store = await Store.open({ home });
  return {
    target: store,
    corrupt: (d: Descriptor) => flipByte(store.layout.blobPath(d.digest)),
    reopen: async () => Store.open({ home }),
    cleanup: () => rm(home, { recursive: true, force: true }),
  };
});

targetConformance('oci-archive', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'archway-conf-ocia-'));
  const file = join(dir, 'image.tar');
  const target = await OciArchiveTarget.create(file);
  let closed = false;
  return {
    target,
    reopen: async () => {
      await target.close();
      closed = true;
      return OciArchiveSource.open(file);
    },
    cleanup: async () => {
      if (!closed) await target.abort();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
