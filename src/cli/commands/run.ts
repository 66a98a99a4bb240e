import { promises as fs } from 'node:fs';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { ArchwayError, isArchwayError } from '../../util/index.js';
import { formatPlatform, hostPlatform, parsePlatform, platformMatches, type Descriptor, type Digest } from '../../oci/index.js';
import { parseLocation, formatReference } from '../../ref/index.js';
import { isIndex, loadImage, readManifestOrIndex, resolveImageForPlatform } from '../../image/index.js';
import { Store } from '../../store/index.js';
import { copyImage, openSource, type OpenContext } from '../../imagetools/index.js';
import { layerSnapshots } from '../../build/index.js';
import { rootfsDriverSetting, runInSandbox, type SandboxBind, type SandboxControl } from '../../sandbox/index.js';
import { boolOpt, listOpt, stringOpt, usageError, type Command } from '../command.js';

export const runCommand: Command = {
  name: 'run',
  usage: '[OPTIONS] IMAGE [COMMAND [ARG...]]',
  summary: 'Run a command in an image of any platform (foreign ones under QEMU); changes are thrown away',
  description: `IMAGE is a name in the local store (pulled from its registry when absent), or oci:DIR[:TAG],
oci-archive:FILE[:TAG], docker-archive:FILE. The platform's image is picked from an index (this
host's platform by default). The root filesystem is an overlay of the image's layers, or a copy of
them where overlayfs is not available (ARCHWAY_ROOTFS_DRIVER=auto|overlay|copy chooses; see
docs/rootless.md). As a non-root user it runs in a user namespace (docs/rootless.md).

Examples:
  archway run --platform linux/arm64 app:1 uname -m
  archway run -e GREETING=hi -w /tmp --network none app:1 sh -c 'echo $GREETING'`,
  stopAtFirstPositional: 1,
  options: {
    platform: { type: 'string', help: 'PLATFORM:the platform to run (default: this host)' },
    env: { type: 'string', short: 'e', multiple: true, help: 'KEY=VALUE:set an environment variable' },
    workdir: { type: 'string', short: 'w', help: 'DIR:working directory inside the container' },
    user: { type: 'string', short: 'u', help: 'USER:user[:group], names or numbers' },
    network: { type: 'string', default: 'host', help: 'MODE:none or host' },
    volume: { type: 'string', short: 'v', multiple: true, value: 'HOST:CONTAINER[:ro]', help: 'bind-mount a host path' },
    interactive: { type: 'boolean', short: 'i', help: 'give the command this standard input (without -i it reads /dev/null, as docker run)' },
    tty: { type: 'boolean', short: 't', help: 'set TERM for a terminal program (the terminal is used as it is: no pseudo-terminal of its own is allocated)' },
    entrypoint: { type: 'string', help: 'CMD:override the image entrypoint' },
    'insecure-registry': { type: 'string', multiple: true, help: 'HOST:plain HTTP or unverified TLS for HOST' },
  },
  async run(ctx) {
    const imageArg = ctx.positionals[0];
    if (!imageArg) throw usageError('"archway run" requires an IMAGE', 'run');
    const requested = stringOpt(ctx, 'platform');
    let platform = parsePlatform(requested ?? formatPlatform(hostPlatform()));
    const network = stringOpt(ctx, 'network') ?? 'host';
    if (network !== 'none' && network !== 'host') throw usageError(`--network "${network}": expected none or host`, 'run');
    const s = { signal: ctx.signal };
    const store = await Store.open({ env: ctx.env, ...s });
    const openCtx: OpenContext = { store, env: ctx.env, insecureRegistries: listOpt(ctx, 'insecure-registry'), signal: ctx.signal };
    const loc = parseLocation(imageArg, 'store');
    // Without --platform, a single-platform image of another platform runs as it is (under
    // emulation), as docker run does, with a warning; an index gives this host's image.
    const adoptPlatform = async (desc: Descriptor): Promise<void> => {
      if (requested) return;
      const parsed = await readManifestOrIndex(store, desc, s);
      if (isIndex(parsed)) return;
      const own = (await loadImage(store, desc, s)).platform;
      if (platformMatches([own], platform)) return;
      ctx.stderr.write(`warning: ${imageArg} is an image for ${formatPlatform(own)} only, not this host's ${formatPlatform(platform)}; running it under emulation (--platform ${formatPlatform(own)} says so)\n`);
      platform = own;
    };
    // Only this host's image of an index, or a single-platform image as it is, without --platform.
    const selection = requested ? { platforms: [platform] } : { multiArch: 'system' as const };
    let root;
    if (loc.transport === 'store') {
      const name = formatReference(loc.ref);
      try {
        root = await store.resolve(loc.ref.digest ?? name, s);
        await adoptPlatform(root);
        await resolveImageForPlatform(store, root, platform, { ...s, strict: true, what: imageArg });
      } catch (e) {
        if (!isArchwayError(e, 'NOT_FOUND') && !isArchwayError(e, 'PLATFORM')) throw e;
        // Not here (or not for this platform): pull it from its registry, as docker run does.
        try {
          const src = await openSource(parseLocation(loc.ref.digest ? `${name}@${loc.ref.digest}` : name, 'registry'), openCtx);
          ctx.stderr.write(`pulling ${imageArg} (${requested ? formatPlatform(platform) : 'this host\'s platform'}) from ${src.registry ?? 'the registry'}\n`);
          const res = await copyImage(src.content, src.reference, store, loc.ref.digest ? [] : [name], { ...s, ...selection, progress: ctx.progress });
          root = res.descriptor;
          await adoptPlatform(root);
        } catch (pullError) {
          // The local image is the better answer when it exists: say which platforms it has.
          if (isArchwayError(e, 'PLATFORM') && !ctx.signal.aborted) {
            throw new ArchwayError('PLATFORM', `${e.message} (in the local store; pulling it from its registry failed too: ${(pullError as Error).message.split('\n')[0]})`, { details: e.details });
          }
          throw pullError;
        }
      }
    } else {
      // Archives and layouts: bring the image into the store first, where its layers are unpacked once.
      const src = await openSource(loc, openCtx);
      const res = await copyImage(src.content, src.reference, store, [], { ...s, ...selection });
      root = res.descriptor;
      await adoptPlatform(root);
    }
    const image = await resolveImageForPlatform(store, root, platform, { ...s, strict: true, what: imageArg });
    const layers = image.manifest.value.layers.map((d, i) => ({ descriptor: d, diffID: image.config.rootfs.diff_ids[i] as Digest }));
    const snapshots = await layerSnapshots(store, layers, ctx.signal);
    const cfg = image.config.config ?? {};
    const entrypointOpt = stringOpt(ctx, 'entrypoint');
    const entrypoint = entrypointOpt !== undefined ? (entrypointOpt === '' ? [] : [entrypointOpt]) : cfg.Entrypoint ?? [];
    const cmd = ctx.positionals.length > 1 ? ctx.positionals.slice(1) : entrypointOpt !== undefined ? [] : cfg.Cmd ?? [];
    const argv = [...entrypoint, ...cmd];
    if (argv.length === 0) throw new ArchwayError('USAGE', `${imageArg} has no entrypoint or command; give one: archway run ${imageArg} sh`);
    const env = [...(cfg.Env ?? [])];
    for (const e of listOpt(ctx, 'env')) {
      const i = e.indexOf('=');
      const [k, v] = i < 0 ? [e, ctx.env[e]] : [e.slice(0, i), e.slice(i + 1)];
      if (v === undefined) continue;
      const at = env.findIndex((x) => x.startsWith(`${k}=`));
      if (at >= 0) env.splice(at, 1);
      env.push(`${k}=${v}`);
    }
    const binds: SandboxBind[] = [];
    for (const v of listOpt(ctx, 'volume')) {
      const parts = v.split(':');
      if (parts.length < 2 || parts.length > 3 || !parts[1]?.startsWith('/')) throw usageError(`-v "${v}": expected HOST:CONTAINER[:ro] with an absolute CONTAINER path`, 'run');
      const source = path.resolve(parts[0] as string);
      try {
        await fs.stat(source);
      } catch {
        throw usageError(`-v "${v}": host path ${source} does not exist`, 'run');
      }
      binds.push({ source, target: parts[1], readonly: parts[2] === 'ro' });
    }
    const workdir = stringOpt(ctx, 'workdir') ?? cfg.WorkingDir;
    const user = stringOpt(ctx, 'user') ?? cfg.User;
    // Signals pass through, as with docker run: the first SIGINT or SIGTERM goes to the command
    // (which, as pid 1 of its namespace, only sees signals it handles), the next one stops it.
    // On a terminal, Ctrl-C already reached the command through its process group: not twice.
    let control: SandboxControl | undefined;
    ctx.interceptSignal?.((sig) => {
      if (!control) return false;
      const fromTerminal = sig === 'SIGINT' && ctx.stdin === process.stdin && process.stdin.isTTY === true;
      if (!fromTerminal && !control.kill(sig)) return false;
      ctx.stderr.write(`archway: ${sig} ${fromTerminal ? 'reached' : 'passed to'} the command; send it again to stop the container\n`);
      return true;
    });
    const result = await runInSandbox({
      layers: snapshots,
      argv,
      env,
      ...(workdir ? { cwd: workdir } : {}),
      ...(user ? { user } : {}),
      hostname: 'archway',
      network,
      binds,
      stdio: 'inherit',
      // As docker run: the command gets this terminal's or pipe's input only with -i.
      stdin: boolOpt(ctx, 'interactive') ? 'inherit' : 'ignore',
      ...(boolOpt(ctx, 'tty') && !env.some((e) => e.startsWith('TERM=')) ? { env: [...env, `TERM=${ctx.env['TERM'] || 'xterm'}`] } : {}),
      platform: image.platform,
      rootfsDriver: await rootfsDriverSetting(ctx.env),
      // A copied root (no overlayfs) goes beside the snapshots, where a reflink is possible.
      scratchDir: store.tmpDir,
      signal: ctx.signal,
      onStart: (c) => {
        control = c;
      },
    });
    // As a shell reports it: 128 + the signal's number when the command was killed.
    if (result.signal) return 128 + (osConstants.signals[result.signal] ?? 0);
    return result.exitCode ?? 1;
  },
};
