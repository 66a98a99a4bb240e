import { createReadStream, constants as fsc, promises as fs } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { createHash, randomBytes } from 'node:crypto';
import { ArchwayError, errorMessage, isArchwayError, Limiter, SingleFlight, throwIfAborted } from '../util/index.js';
import {
  formatPlatform,
  type Descriptor,
  type Digest,
  type ImageConfig,
  type Platform,
} from '../oci/index.js';
import type { ProgressSink } from '../progress/index.js';
import { applyLayer, writeLayerFromDirectory, type LayerInfo } from '../layer/index.js';
import { emptyConfig, type ContentSource, type LayerRef, type LoadedImage } from '../image/index.js';
import { tempName, type Store } from '../store/index.js';
import type { AddStep, CopySource, CopyStep, RunStep, StageNode, Step } from '../graph/index.js';
import { cleanSourcePath, digestSources, expandSource, type SourceTree } from './context.js';
import { digestCopySources, expandCopySource, parseChmod, parseChown, stageCopy, type ChmodRule, type CopySourceEntry } from './copy.js';
import { downloadUrl, isHttpUrl, parseChecksum, urlFileName, URL_FILE_MODE, type Downloaded } from './download.js';
import { withRunMounts, type MountEnv } from './mounts.js';
import type { SandboxBind } from '../sandbox/index.js';
import { lookupInLayers, readFileFromLayers, runStep, withMergedRoot } from './rootfs.js';
import { layerSnapshots } from './snapshots.js';

/** What a stage has built so far: the image config and the layers under it. */
export interface StageState {
  /** Cache key of this state: everything that produced it. */
  key: string;
  config: ImageConfig;
  layers: LayerRef[];
  platform: Platform;
}

interface CacheRecord {
  config: ImageConfig;
  layers: Array<{ descriptor: Descriptor; diffID: Digest }>;
}

export interface SolverOptions {
  store: Store;
  contextTree: SourceTree;
  /** Opens the source of a base image by reference (the store first, then the registry). */
  openBase: (ref: string, platform: Platform) => Promise<{ source: ContentSource; image: LoadedImage }>;
  noCache: boolean;
  network: 'default' | 'none' | 'host';
  buildPlatform: Platform;
  targetPlatformOf: (stage: StageNode) => Platform;
  sourceDateEpoch?: number;
  /** The Dockerfile's name as the user gave it, for `file:line` in messages. */
  dockerfileName?: string;
  /** --secret values by id, for RUN --mount=type=secret. */
  secrets?: ReadonlyMap<string, Buffer>;
  signal?: AbortSignal;
  progress: ProgressSink;
}

const SHORT_OUTPUT_LINES = 20;

/** Counts per platform, for the summary and the cross-compilation advice. */
export interface StepStats {
  run: number;
  cached: number;
  emulatedMs: number;
  slowEmulatedSteps: Array<{ stage: StageNode; step: RunStep; ms: number }>;
}

/**
 * Executes stages of a plan with the cache. Each stage is solved once per id (stages shared by
 * several targets are solved once), RUN steps are bounded by the CPU count since emulated steps
 * are CPU-bound, and a step whose cache record exists is not run again.
 */
/** The newest time an image config records (its history, or its own created): when its state was made. */
export function latestCreated(config: ImageConfig): string | undefined {
  let latest: string | undefined;
  for (const t of [config.created, ...(config.history ?? []).map((h) => h.created)]) {
    if (t !== undefined && !Number.isNaN(Date.parse(t)) && (latest === undefined || Date.parse(t) > Date.parse(latest))) latest = t;
  }
  return latest;
}

export class Solver {
  private readonly stageFlights = new SingleFlight<StageState>();
  private readonly stageResults = new Map<string, Promise<StageState>>();
  /** COPY/ADD layers of this build by their base-independent key. */
  private readonly copyLayers = new Map<string, Promise<LayerRef>>();
  private readonly contextDigests = new Map<string, Promise<string>>();
  private readonly runLimiter = new Limiter(Math.max(1, availableParallelism()));
  /** ADD URL downloads of this build, by algorithm and URL: every platform shares one download. */
  private readonly downloads = new Map<string, Promise<Downloaded>>();
  private downloadDir: Promise<string> | undefined;
  readonly stats = new Map<string, StepStats>();

  constructor(private readonly o: SolverOptions) {}

  /** Removes what the build downloaded (call once the build is over). */
  async dispose(): Promise<void> {
    const dir = await this.downloadDir?.catch(() => undefined);
    if (dir) await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }

  /** `Dockerfile:12`, and for a step an ONBUILD trigger brought in, where the trigger came from. */
  private where(stage: StageNode, step: Step): string {
    const file = this.o.dockerfileName ?? 'Dockerfile';
    if (step.kind === 'onbuild' || !step.display.startsWith('ONBUILD ')) return `${file}:${step.line}`;
    const from = stage.base.kind === 'image' ? `base image ${stage.base.ref}` : stage.base.kind === 'stage' ? `stage ${stage.base.stage.name ?? stage.base.stage.index}` : 'its base';
    return `${file}:${step.line} (ONBUILD trigger from ${from})`;
  }

  private statsFor(p: Platform): StepStats {
    const k = formatPlatform(p);
    let s = this.stats.get(k);
    if (!s) {
      s = { run: 0, cached: 0, emulatedMs: 0, slowEmulatedSteps: [] };
      this.stats.set(k, s);
    }
    return s;
  }

  solveStage(stage: StageNode): Promise<StageState> {
    const existing = this.stageResults.get(stage.id);
    if (existing) return existing;
    const p = this.stageFlights.do(stage.id, () => this.runStage(stage));
    this.stageResults.set(stage.id, p);
    return p;
  }

  private async baseState(stage: StageNode): Promise<StageState> {
    const base = stage.base;
    if (base.kind === 'scratch') {
      return { key: sha(`scratch\0${formatPlatform(stage.platform)}`), config: emptyConfig(stage.platform), layers: [], platform: stage.platform };
    }
    if (base.kind === 'stage') return this.solveStage(base.stage);
    const { image } = await this.o.openBase(base.ref, base.platform);
    const layers = image.manifest.value.layers.map((d, i) => ({ descriptor: d, diffID: image.config.rootfs.diff_ids[i] as Digest }));
    const config: ImageConfig = JSON.parse(image.rawConfig.toString('utf8')) as ImageConfig;
    return { key: sha(`image\0${image.descriptor.digest}`), config, layers, platform: image.platform };
  }

  private async runStage(stage: StageNode): Promise<StageState> {
    let state = await this.baseState(stage);
    // A stage built on another stage or image takes that state but runs on its own platform.
    state = { ...state, platform: stage.platform };
    // The base's ONBUILD triggers ran as this stage's first steps (the planner put them there);
    // they do not carry over into this image, as in docker and BuildKit.
    if (state.config.config?.OnBuild) {
      const config = structuredClone(state.config);
      if (config.config) delete config.config.OnBuild;
      state = { ...state, config };
    }
    for (const step of stage.steps) {
      throwIfAborted(this.o.signal);
      state = await this.runStep(stage, state, step);
    }
    return state;
  }

  private async runStep(stage: StageNode, state: StageState, step: Step): Promise<StageState> {
    const platform = formatPlatform(this.o.targetPlatformOf(stage));
    const stats = this.statsFor(this.o.targetPlatformOf(stage));
    const id = `${stage.id.slice(0, 12)}:${step.line}`;
    const text = step.display;
    const started = Date.now();
    const emit = (phase: 'start' | 'done' | 'cached' | 'error', error?: string): void =>
      this.o.progress.emit({ kind: 'step', phase, id, platform, text, ...(phase !== 'start' ? { durationMs: Date.now() - started } : {}), ...(error ? { error } : {}) });
    const config = structuredClone(state.config);
    config.config ??= {};
    // A step that only changes the config takes the time of the state it changes, so a rebuild
    // whose layer steps all come from the cache makes the same image, digest included (BuildKit
    // likewise takes times from its cache records). Only a step that ran is dated now.
    const history = (created_by: string, empty: boolean): void => {
      const created = empty && this.o.sourceDateEpoch === undefined ? (latestCreated(config) ?? this.created()) : this.created();
      config.history = [...(config.history ?? []), { created, created_by, comment: 'archway', ...(empty ? { empty_layer: true } : {}) }];
    };
    const c = config.config;
    switch (step.kind) {
      case 'env':
        for (const { key, value } of step.pairs) c.Env = setEnv(c.Env ?? [], key, value);
        history(`ENV ${step.pairs.map((p) => `${p.key}=${p.value}`).join(' ')}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      case 'workdir': {
        const wd = path.posix.resolve(c.WorkingDir || '/', step.path);
        c.WorkingDir = wd;
        history(`WORKDIR ${wd}`, true);
        return { ...state, key: sha(`${state.key}\0WORKDIR ${wd}`), config };
      }
      case 'user':
        c.User = step.user;
        history(`USER ${step.user}`, true);
        return { ...state, key: sha(`${state.key}\0USER ${step.user}`), config };
      case 'label':
        c.Labels = { ...(c.Labels ?? {}) };
        for (const { key, value } of step.pairs) c.Labels[key] = value;
        history(`LABEL ${step.pairs.map((p) => `${p.key}=${p.value}`).join(' ')}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      case 'expose':
        c.ExposedPorts = { ...(c.ExposedPorts ?? {}) };
        for (const port of step.ports) c.ExposedPorts[port] = {};
        history(`EXPOSE ${step.ports.join(' ')}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      case 'volume':
        c.Volumes = { ...(c.Volumes ?? {}) };
        for (const v of step.paths) c.Volumes[v] = {};
        history(`VOLUME ${JSON.stringify(step.paths)}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      case 'stopsignal':
        c.StopSignal = step.signal;
        history(`STOPSIGNAL ${step.signal}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      case 'healthcheck': {
        const hc: NonNullable<typeof c.Healthcheck> = { Test: step.test };
        if (step.interval !== undefined) hc.Interval = step.interval;
        if (step.timeout !== undefined) hc.Timeout = step.timeout;
        if (step.startPeriod !== undefined) hc.StartPeriod = step.startPeriod;
        if (step.startInterval !== undefined) hc.StartInterval = step.startInterval;
        if (step.retries !== undefined) hc.Retries = step.retries;
        c.Healthcheck = hc;
        history(`HEALTHCHECK ${step.test.join(' ')}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      }
      case 'entrypoint':
        c.Entrypoint = step.args;
        // BuildKit drops a CMD inherited from the base when ENTRYPOINT is set, but keeps one set earlier in this stage.
        if (!stage.steps.slice(0, stage.steps.indexOf(step)).some((s) => s.kind === 'cmd')) c.Cmd = null;
        history(`ENTRYPOINT ${JSON.stringify(step.args)}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      case 'cmd':
        c.Cmd = step.args;
        history(`CMD ${JSON.stringify(step.args)}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      case 'shell':
        c.Shell = step.shell;
        history(`SHELL ${JSON.stringify(step.shell)}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      case 'onbuild':
        c.OnBuild = [...(c.OnBuild ?? []), step.instruction];
        history(`ONBUILD ${step.instruction}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      case 'maintainer':
        config.author = step.maintainer;
        history(`MAINTAINER ${step.maintainer}`, true);
        return { ...state, key: sha(`${state.key}\0${step.key}`), config };
      case 'arg':
        // ARG changes what later steps see (they carry it in their own keys); nothing to record.
        return state;
      case 'run':
      case 'copy':
      case 'add':
        break;
    }
    // Layer-producing steps: key, cache, execute.
    const inputs = await this.stepInputs(stage, step);
    const key = sha(`${state.key}\0${step.kind}\0${step.display}\0${JSON.stringify(stepIdentity(step))}\0${inputs}`);
    emit('start');
    try {
      if (!this.o.noCache) {
        const rec = (await this.o.store.getCacheRecord(key)) as CacheRecord | undefined;
        if (rec && (await this.layersPresent(rec.layers))) {
          stats.cached++;
          emit('cached');
          return { key, config: rec.config, layers: rec.layers, platform: state.platform };
        }
      }
      let layer: LayerRef;
      let createdBy: string;
      if (step.kind === 'run') {
        const t0 = Date.now();
        layer = await this.runLimiter.run(() => this.execRun(stage, state, step), this.o.signal);
        const ms = Date.now() - t0;
        if (!sameArch(stage.platform, this.o.buildPlatform)) {
          stats.emulatedMs += ms;
          stats.slowEmulatedSteps.push({ stage, step, ms });
        }
        createdBy = `RUN ${step.command && 'shell' in step.command ? `/bin/sh -c ${step.command.shell}` : JSON.stringify(step.args)} # archway`;
      } else {
        layer = await this.execCopy(stage, state, step, inputs);
        createdBy = `${step.kind.toUpperCase()} ${step.kind === 'copy' && step.parents ? '--parents ' : ''}${[...step.sources, ...(step.kind === 'add' ? step.urls : [])].join(' ')} ${step.dest} # archway`;
      }
      stats.run++;
      const layers = [...state.layers, layer];
      history(createdBy, false);
      config.rootfs = { type: 'layers', diff_ids: layers.map((l) => l.diffID) };
      await this.o.store.putCacheRecord(key, { config, layers } satisfies CacheRecord);
      emit('done');
      return { key, config, layers, platform: state.platform };
    } catch (e) {
      emit('error', errorMessage(e));
      throw e;
    }
  }

  private created(): string {
    return new Date(this.o.sourceDateEpoch !== undefined ? this.o.sourceDateEpoch * 1000 : Date.now()).toISOString();
  }

  private async layersPresent(layers: CacheRecord['layers']): Promise<boolean> {
    for (const l of layers) if (!(await this.o.store.exists(l.descriptor))) return false;
    return true;
  }

  /** What a step reads besides its parent state: the contents of COPY/ADD sources. */
  /** The digest of context sources, once per build for every platform that copies them. */
  private contextDigest(sources: string[], parents: boolean): Promise<string> {
    const key = JSON.stringify([sources, parents]);
    let digest = this.contextDigests.get(key);
    if (!digest) {
      digest = (async () => {
        const entries: CopySourceEntry[] = [];
        for (const s of sources) entries.push(...(await expandCopySource(this.o.contextTree, s, { parents, scope: 'context' })));
        return digestCopySources(this.o.contextTree, entries);
      })();
      this.contextDigests.set(key, digest);
    }
    return digest;
  }

  private async stepInputs(stage: StageNode, step: Step): Promise<string> {
    if (step.kind === 'copy' || step.kind === 'add') {
      const from: CopySource = step.from;
      if (from.kind === 'context') {
        const urls = step.kind === 'add' ? step.urls : [];
        if (step.sources.length === 0 && urls.length === 0) return 'inline';
        const parts: string[] = [];
        if (step.sources.length > 0) {
          parts.push(await this.contextDigest(step.sources, step.kind === 'copy' && step.parents).catch((e: unknown) => rethrowAt(e, this.where(stage, step), step)));
        }
        if (step.kind === 'add') for (const u of step.urls) parts.push(await this.urlInput(stage, step, u));
        return urls.length === 0 ? (parts[0] as string) : sha(`urls\0${parts.join('\0')}`);
      }
      if (from.kind === 'stage') return (await this.solveStage(from.stage)).key;
      const { image } = await this.o.openBase(from.ref, from.platform);
      return image.descriptor.digest;
    }
    if (step.kind === 'run') {
      // A RUN reads its network mode and what it bind-mounts (the content of context files, the
      // state of stages, the digest of images); the architecture is in the key so that platforms
      // sharing a base state (a scratch stage) never share a RUN result. What cache, tmpfs and
      // secret mounts hold is not in the key, as in BuildKit: only their options are (stepIdentity).
      const mounts = [];
      for (const m of step.mounts) {
        if ((m.type !== 'bind' && m.type !== 'cache') || !m.from) continue;
        if (m.from.kind === 'stage') mounts.push((await this.solveStage(m.from.stage)).key);
        else if (m.from.kind === 'image') mounts.push((await this.o.openBase(m.from.ref, m.from.platform)).image.descriptor.digest);
        else {
          const src = m.source ?? '/';
          const matches = await expandSource(this.o.contextTree, src).catch(() => {
            throw new ArchwayError('NOT_FOUND', `${this.where(stage, step)}: mount source "${src}" not found in the build context`);
          });
          mounts.push(`context:${await digestSources(this.o.contextTree, matches)}`);
        }
      }
      return `${this.o.network}\0${mounts.join(',')}\0${stage.platform.architecture}`;
    }
    return '';
  }

  /**
   * What an ADD of a URL contributes to the cache key: with --checksum, the checksum (nothing is
   * downloaded on a cache hit); without, the content itself, downloaded again on every build.
   */
  private async urlInput(stage: StageNode, step: AddStep, url: string): Promise<string> {
    if (!isHttpUrl(url)) {
      throw new ArchwayError('USAGE', `${this.where(stage, step)}: ADD of a Git repository is not supported yet: ${url}`, { hint: 'clone it into the build context and COPY it' });
    }
    if (step.checksum) {
      try {
        parseChecksum(step.checksum);
      } catch (e) {
        return rethrowWhere(e, this.where(stage, step));
      }
      return `${url}\0checksum\0${step.checksum}`;
    }
    const d = await this.fetchUrl(stage, step, url);
    return `${url}\0sha256:${d.digests['sha256'] ?? ''}\0${d.mtime.getTime()}`;
  }

  /** Downloads a URL once per build (shared by platforms and steps) and checks --checksum. */
  private async fetchUrl(stage: StageNode, step: AddStep, url: string): Promise<Downloaded> {
    let checksum;
    try {
      checksum = step.checksum ? parseChecksum(step.checksum) : undefined;
    } catch (e) {
      return rethrowWhere(e, this.where(stage, step));
    }
    const algorithm = checksum?.algorithm ?? 'sha256';
    const k = `${algorithm}\0${url}`;
    let p = this.downloads.get(k);
    if (!p) {
      p = (async () => {
        this.downloadDir ??= this.tempDir('download-');
        const dir = await this.downloadDir;
        this.o.progress.emit({ kind: 'message', level: 'info', text: `downloading ${url}` });
        return downloadUrl(url, path.join(dir, randomBytes(8).toString('hex')), { algorithms: [algorithm], ...(this.o.signal ? { signal: this.o.signal } : {}) });
      })();
      this.downloads.set(k, p);
      p.catch(() => this.downloads.delete(k));
    }
    let d: Downloaded;
    try {
      d = await p;
    } catch (e) {
      return rethrowWhere(e, `${this.where(stage, step)}: ADD`);
    }
    if (checksum && d.digests[algorithm] !== checksum.hex) {
      throw new ArchwayError('INTEGRITY', `${this.where(stage, step)}: ADD --checksum: ${url} has the digest ${algorithm}:${d.digests[algorithm] ?? ''}, expected ${step.checksum ?? ''}`, {
        details: { url, line: step.line, expected: step.checksum, actual: `${algorithm}:${d.digests[algorithm] ?? ''}` },
        hint: 'the file at that URL changed, or the checksum is wrong; check the URL and update --checksum',
      });
    }
    return d;
  }

  // ------------------------------------------------------------------ snapshots

  private snapshots(state: StageState): Promise<string[]> {
    return layerSnapshots(this.o.store, state.layers, this.o.signal);
  }

  /** Moves a layer file this build wrote (and digested) into the store and returns its ref. */
  private async ingestLayer(file: string, info: LayerInfo): Promise<LayerRef> {
    const descriptor: Descriptor = { mediaType: info.mediaType, digest: info.digest, size: info.size };
    try {
      await this.o.store.adoptFile(descriptor, file);
    } finally {
      await fs.rm(file, { force: true });
    }
    return { descriptor, diffID: info.diffID };
  }

  /** A working directory in the store's tmp, named for this process: prune leaves it alone while we live. */
  private async tempDir(prefix: string): Promise<string> {
    await fs.mkdir(this.o.store.tmpDir, { recursive: true });
    return fs.mkdtemp(path.join(this.o.store.tmpDir, tempName(prefix)));
  }

  // ------------------------------------------------------------------ RUN

  private async execRun(stage: StageNode, state: StageState, step: RunStep): Promise<LayerRef> {
    const lowers = await this.snapshots(state);
    const work = await this.tempDir('run-');
    const upper = path.join(work, 'upper');
    await fs.mkdir(upper);
    const cfg = state.config.config ?? {};
    const cwd = cfg.WorkingDir || '/';
    // The working directory must exist to start the process; creating it belongs to this layer.
    if (!(await lookupInLayers(lowers, cwd))) await fs.mkdir(path.join(upper, cleanSourcePath(cwd)), { recursive: true, mode: 0o755 });
    const env = mergeEnv(cfg.Env ?? [], step.env);
    const tail: string[] = [];
    const platform = formatPlatform(this.o.targetPlatformOf(stage));
    const lineId = `${stage.id.slice(0, 12)}:${step.line}`;
    const emitLine = (line: string, stream: 'stdout' | 'stderr'): void => {
      tail.push(line);
      if (tail.length > SHORT_OUTPUT_LINES) tail.shift();
      this.o.progress.emit({ kind: 'log', id: lineId, platform, stream, line });
    };
    // Per stream: a line begun on stdout is not finished by stderr, nor a character split
    // between two chunks decoded in halves.
    const pending = { stdout: { text: '', decoder: new StringDecoder('utf8') }, stderr: { text: '', decoder: new StringDecoder('utf8') } };
    const onOutput = (chunk: Buffer, stream: 'stdout' | 'stderr'): void => {
      const p = pending[stream];
      const lines = (p.text + p.decoder.write(chunk)).split('\n');
      p.text = lines.pop() ?? '';
      for (const line of lines) emitLine(line, stream);
    };
    // The last line of output may lack its newline; it is output all the same.
    const flushOutput = (): void => {
      for (const stream of ['stdout', 'stderr'] as const) {
        const p = pending[stream];
        const rest = p.text + p.decoder.end();
        p.text = '';
        if (rest) emitLine(rest, stream);
      }
    };
    // The default network of a RUN step is the host's, as BuildKit's; --network none isolates it.
    const network = step.network !== 'default' ? step.network : this.o.network === 'none' ? 'none' : 'host';
    const mountEnv: MountEnv = {
      store: this.o.store,
      contextTree: this.o.contextTree,
      secrets: this.o.secrets ?? new Map(),
      sourceSnapshots: (from) => this.sourceSnapshots(from),
      where: this.where(stage, step),
      warn: (text) => this.o.progress.emit({ kind: 'message', level: 'warn', text }),
      ...(this.o.signal ? { signal: this.o.signal } : {}),
    };
    try {
      // `RUN <<EOF` whose heredoc starts with #!: BuildKit runs it as a file at /dev/pipes/EOF.
      const scriptBind = step.script ? await writeRunScript(work, step.script) : undefined;
      // The mounts are released (unmounted, copies removed) before the layer is written.
      const run = await withRunMounts(mountEnv, step.mounts, cwd, ({ binds, env: secretEnv }) =>
        runStep({
          layers: lowers,
          upperDir: upper,
          argv: step.args,
          env: [...env.filter((e) => !secretEnv.some((s) => e.startsWith(s.slice(0, s.indexOf('=') + 1)))), ...secretEnv],
          cwd,
          ...(cfg.User ? { user: cfg.User } : {}),
          hostname: 'archway',
          network,
          binds: scriptBind ? [...binds, scriptBind] : binds,
          stdio: 'pipe',
          onOutput,
          platform: stage.platform,
          ...(this.o.signal ? { signal: this.o.signal } : {}),
        }, work).catch((e: unknown) => rethrowAt(e, this.where(stage, step), step)),
      );
      const result = run.result;
      flushOutput();
      if (result.exitCode !== 0) {
        throwIfAborted(this.o.signal);
        const how = result.signal ? `was killed by ${result.signal}` : `exited with code ${result.exitCode}`;
        throw new ArchwayError('STEP_FAILED', `[${platform}] ${step.display} (${this.where(stage, step)}) ${how}${tail.length ? `\n--- last lines of output ---\n${tail.join('\n')}` : ''}`, {
          details: { platform, line: step.line, exitCode: result.exitCode },
        });
      }
      const file = path.join(work, 'layer.tar.gz');
      const info = await run.writeLayer(file, { compression: 'gzip', ...(this.o.sourceDateEpoch !== undefined ? { sourceDateEpoch: this.o.sourceDateEpoch } : {}), ...(this.o.signal ? { signal: this.o.signal } : {}) });
      const ref = await this.ingestLayer(file, info);
      // The upper directory already is this layer unpacked, whiteouts in overlay form: keep it.
      // (A copied-tree run has no upper: the snapshot is unpacked from the layer when needed.)
      const kept = run.upper;
      if (kept !== undefined) {
        await this.o.store.ensureSnapshot(info.diffID, async (tmp) => {
          await fs.rm(tmp, { recursive: true, force: true });
          await fs.rename(kept, tmp);
        });
      }
      return ref;
    } finally {
      await fs.rm(work, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  // ------------------------------------------------------------------ COPY / ADD

  private async execCopy(stage: StageNode, state: StageState, step: CopyStep | AddStep, inputsDigest: string): Promise<LayerRef> {
    const lowers = await this.snapshots(state);
    const cfg = state.config.config ?? {};
    const dest = path.posix.isAbsolute(step.dest) ? step.dest : path.posix.join(cfg.WorkingDir || '/', step.dest) + (step.dest.endsWith('/') ? '/' : '');
    const destHit = await lookupInLayers(lowers, dest);
    const destIsDir = destHit?.isDir ?? false;
    let chown: { uid: number; gid: number } | undefined;
    if (step.chown) {
      const needsNames = !/^\d+(:\d+)?$/.test(step.chown);
      chown = parseChown(step.chown, needsNames ? await readFileFromLayers(lowers, '/etc/passwd') : undefined, needsNames ? await readFileFromLayers(lowers, '/etc/group') : undefined);
    }
    let chmod: ChmodRule | undefined;
    try {
      chmod = step.chmod ? parseChmod(step.chmod) : undefined;
    } catch (e) {
      rethrowAt(e, this.where(stage, step), step);
    }
    // The layer depends only on what is copied and where, not on the base: the same COPY on every
    // platform makes one layer, computed once (the key has no parent state in it).
    // A stage's or image's key says nothing of which of its paths are copied: the sources go in too.
    const parents = step.kind === 'copy' && step.parents;
    const fromTree = step.from.kind === 'context' ? '' : `${JSON.stringify(step.sources)}\0`;
    const layerKey = sha(`copy-layer\0${inputsDigest}\0${fromTree}${step.kind === 'add' ? `${JSON.stringify(step.urls)}\0${step.unpack ?? ''}\0` : ''}${dest}\0${destIsDir}\0${JSON.stringify(chown ?? null)}\0${step.chmod ?? ''}\0${JSON.stringify(step.exclude)}\0${JSON.stringify(step.heredocs)}${parents ? '\0parents' : ''}`);
    // Computed once per build, --no-cache included: later platforms take the first one's layer.
    const known = this.copyLayers.get(layerKey);
    if (known) return known;
    const layer = (async (): Promise<LayerRef> => {
      if (!this.o.noCache) {
        const rec = (await this.o.store.getCacheRecord(layerKey)) as { layer: LayerRef } | undefined;
        if (rec && (await this.o.store.exists(rec.layer.descriptor))) return rec.layer;
      }
      const work = await this.tempDir('copy-');
      try {
        const staging = path.join(work, 'root');
        await fs.mkdir(staging);
        const urls = step.kind === 'add' ? step.urls : [];
        if (step.sources.length + urls.length > 1 && !dest.endsWith('/') && !destIsDir) {
          throw new ArchwayError('USAGE', `${this.where(stage, step)}: when adding several sources the destination must be a directory and end with a /: "${step.dest}"`);
        }
        if (step.heredocs.length > 0 && step.sources.length === 0 && urls.length === 0) {
          await this.stageInline(step, staging, dest, chown, chmod);
        } else {
          if (step.kind === 'add') for (const u of step.urls) await this.stageUrl(stage, step, u, staging, dest, destIsDir, chown, chmod);
          if (step.sources.length > 0) await this.withSourceTree(step.from, async (tree) => {
            const matches: CopySourceEntry[] = [];
            const scope = step.from.kind === 'context' ? 'context' : 'rootfs';
            for (const s of step.sources) matches.push(...(await expandCopySource(tree, s, { parents, scope }).catch((e: unknown) => rethrowAt(e, this.where(stage, step), step))));
            if (step.kind === 'add' && step.unpack !== false) {
              const archives = matches.filter((m) => m.stat.isFile() && /\.(tar|tar\.gz|tgz|tar\.zst|tar\.xz)$/.test(m.rel));
              for (const a of archives) {
                const target = path.join(staging, cleanSourcePath(dest));
                await fs.mkdir(target, { recursive: true });
                await applyLayer(createReadStream(path.join(tree.root, a.rel)), target, { ...(this.o.signal ? { signal: this.o.signal } : {}) });
              }
              const rest = matches.filter((m) => !archives.includes(m));
              if (rest.length > 0) await stageCopy({ tree, matches: rest, dest, destIsDir, ...(chown ? { chown } : {}), ...(chmod !== undefined ? { chmod } : {}) }, staging);
            } else {
              const excluded = step.exclude.length > 0 ? excludeMatcher(step.exclude) : undefined;
              await stageCopy({ tree, matches, dest, destIsDir: destIsDir || parents, ...(chown ? { chown } : {}), ...(chmod !== undefined ? { chmod } : {}), ...(excluded ? { excluded } : {}) }, staging);
            }
          });
        }
        const file = path.join(work, 'layer.tar.gz');
        const info = await writeLayerFromDirectory(staging, file, { compression: 'gzip', ...(this.o.sourceDateEpoch !== undefined ? { sourceDateEpoch: this.o.sourceDateEpoch } : {}), ...(this.o.signal ? { signal: this.o.signal } : {}) });
        const ref = await this.ingestLayer(file, info);
        await this.o.store.ensureSnapshot(info.diffID, async (tmp) => {
          await fs.rm(tmp, { recursive: true, force: true });
          await fs.rename(staging, tmp);
        });
        await this.o.store.putCacheRecord(layerKey, { layer: ref });
        return ref;
      } finally {
        await fs.rm(work, { recursive: true, force: true }).catch(() => undefined);
      }
    })();
    this.copyLayers.set(layerKey, layer);
    return layer;
  }

  /** Places a downloaded URL in the staging tree: named after the URL's path inside a directory destination, mode 0600. */
  private async stageUrl(stage: StageNode, step: AddStep, url: string, staging: string, dest: string, destIsDir: boolean, chown: { uid: number; gid: number } | undefined, chmod: ChmodRule | undefined): Promise<void> {
    const d = await this.fetchUrl(stage, step, url);
    const name = urlFileName(url);
    const intoDir = dest.endsWith('/') || destIsDir || step.sources.length + step.urls.length > 1;
    const owner = chown ?? { uid: 0, gid: 0 };
    const to = path.join(staging, cleanSourcePath(intoDir ? path.posix.join(dest, name) : dest));
    if (to === staging) throw new ArchwayError('USAGE', `${this.where(stage, step)}: cannot ADD ${url} as /`);
    const parents: string[] = [];
    for (let dir = path.dirname(to); dir.startsWith(staging + path.sep); dir = path.dirname(dir)) parents.unshift(dir);
    for (const dir of parents) {
      try {
        await fs.mkdir(dir, { mode: 0o755 });
        await fs.lchown(dir, owner.uid, owner.gid);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
    if (step.unpack === true && /\.(tar|tar\.gz|tgz|tar\.zst|tar\.xz)$/.test(name)) {
      const target = path.join(staging, cleanSourcePath(dest));
      await fs.mkdir(target, { recursive: true });
      await applyLayer(createReadStream(d.file), target, { ...(this.o.signal ? { signal: this.o.signal } : {}) });
      return;
    }
    await fs.rm(to, { recursive: true, force: true });
    await fs.copyFile(d.file, to, fsc.COPYFILE_FICLONE);
    await fs.lchown(to, owner.uid, owner.gid);
    await fs.chmod(to, chmod ? chmod(URL_FILE_MODE, false) : URL_FILE_MODE);
    await fs.utimes(to, d.mtime, d.mtime);
  }

  private async stageInline(step: CopyStep | AddStep, staging: string, dest: string, chown: { uid: number; gid: number } | undefined, chmod: ChmodRule | undefined): Promise<void> {
    const intoDir = dest.endsWith('/') || step.heredocs.length > 1;
    for (const h of step.heredocs) {
      const to = path.join(staging, cleanSourcePath(intoDir ? path.posix.join(dest, h.name) : dest));
      await fs.mkdir(path.dirname(to), { recursive: true, mode: 0o755 });
      const mode = chmod ? chmod(0o644, false) : 0o644;
      await fs.writeFile(to, h.content, { mode });
      await fs.chmod(to, mode);
      if (chown) await fs.lchown(to, chown.uid, chown.gid);
    }
  }

  private async withSourceTree<T>(from: CopySource, fn: (tree: SourceTree) => Promise<T>): Promise<T> {
    if (from.kind === 'context') return fn(this.o.contextTree);
    const { label, snapshots } = await this.sourceSnapshots(from);
    return withMergedRoot(snapshots, path.join(this.o.store.tmpDir, 'mounts'), (root) => fn({ label, root, ignored: () => false }));
  }

  /** The unpacked layers of a stage or an image that a COPY --from or a mount reads. */
  private async sourceSnapshots(from: Exclude<CopySource, { kind: 'context' }>): Promise<{ label: string; snapshots: string[] }> {
    let state: StageState;
    let label: string;
    if (from.kind === 'stage') {
      state = await this.solveStage(from.stage);
      label = `stage ${from.stage.name ?? from.stage.index}`;
    } else {
      const { image } = await this.o.openBase(from.ref, from.platform);
      state = { key: '', config: image.config, layers: image.manifest.value.layers.map((d, i) => ({ descriptor: d, diffID: image.config.rootfs.diff_ids[i] as Digest })), platform: image.platform };
      label = `image ${from.ref}`;
    }
    return { label, snapshots: await this.snapshots(state) };
  }
}

/** The parts of a layer step that decide its result, beyond its display text. */
function stepIdentity(step: RunStep | CopyStep | AddStep): unknown {
  if (step.kind === 'run') return { args: step.args, env: step.env, mounts: step.mounts.map((m) => ({ ...m, from: undefined })), network: step.network, heredocs: step.heredocs };
  return { sources: step.sources, dest: step.dest, chown: step.chown, chmod: step.chmod, exclude: step.exclude, parents: (step.kind === "copy" && step.parents), heredocs: step.heredocs, link: step.link };
}

function excludeMatcher(patterns: string[]): (rel: string) => boolean {
  const res = patterns.map((p) => new RegExp(`^${cleanSourcePath(p).split('**').map((part) => part.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*')).join('.*')}(/.*)?$`));
  return (rel) => res.some((r) => r.test(rel) || r.test(path.posix.basename(rel)));
}

/** Puts `where` (`Dockerfile:12: ADD`) in front of an error's message, keeping its code. */
function rethrowWhere(e: unknown, where: string): never {
  if (isArchwayError(e) && e.code !== 'INTERRUPTED') {
    throw new ArchwayError(e.code, `${where}: ${e.message}`, { details: e.details, cause: e, ...(e.hint ? { hint: e.hint } : {}) });
  }
  throw e;
}

function rethrowAt(e: unknown, where: string, step: Step): never {
  if (isArchwayError(e) && e.code !== 'INTERRUPTED') {
    throw new ArchwayError(e.code, `${where}: ${step.display}: ${e.message}`, { details: { ...e.details, line: step.line }, ...(e.hint ? { hint: e.hint } : {}) });
  }
  throw e;
}

export function sha(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function setEnv(env: string[], key: string, value: string): string[] {
  const out = env.filter((e) => !e.startsWith(`${key}=`));
  out.push(`${key}=${value}`);
  return out;
}

/** The image's env with the build args in scope; an ENV of the same name wins, as in BuildKit. */
function mergeEnv(imageEnv: string[], args: Record<string, string>): string[] {
  const out = [...imageEnv];
  for (const [k, v] of Object.entries(args)) if (!out.some((e) => e.startsWith(`${k}=`))) out.push(`${k}=${v}`);
  if (!out.some((e) => e.startsWith('PATH='))) out.push('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  return out;
}

function sameArch(a: Platform, b: Platform): boolean {
  return a.architecture === b.architecture || (b.architecture === 'amd64' && a.architecture === '386') || (b.architecture === 'arm64' && a.architecture === 'arm');
}

/** The script of a `RUN <<EOF` heredoc, as a read-only executable file bound at its path in the sandbox. */
async function writeRunScript(work: string, script: { path: string; content: string }): Promise<SandboxBind> {
  const file = path.join(work, 'heredoc-script');
  await fs.writeFile(file, script.content, { mode: 0o755 });
  // The umask may have taken the execute bits.
  await fs.chmod(file, 0o755);
  return { source: file, target: script.path, readonly: true };
}
