import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { availableParallelism } from 'node:os';
import { ArchwayError, errorMessage, isArchwayError, Limiter } from '../util/index.js';
import {
  Annotation,
  bestMatch,
  formatPlatform,
  hostPlatform,
  platformEquals,
  type Descriptor,
  type ImageConfig,
  type Platform,
} from '../oci/index.js';
import { parseLocation, parseReference, withDefaultTag, formatReference } from '../ref/index.js';
import { nullProgress } from '../progress/index.js';
import {
  buildImage,
  buildIndex,
  isIndex,
  loadImage,
  platformManifests,
  readManifestOrIndex,
  resolveImageForPlatform,
  type ContentSource,
  type LoadedImage,
  type ManifestFormat,
} from '../image/index.js';
import { Store } from '../store/index.js';
import { copyImage, openSource, type OpenContext } from '../imagetools/index.js';
import { formatPlan, type BuildPlan, type StageNode } from '../graph/index.js';
import { dockerignoreMatcher, planBuild } from '../dockerfile/index.js';
import { canRun, readBinfmt, type BinfmtState } from '../sandbox/index.js';
import type { SourceTree } from './context.js';
import { cleanStaleMounts } from './rootfs.js';
import { loadSecrets } from './secrets.js';
import { latestCreated, Solver, type StageState } from './solver.js';
import type { BuildOptions, BuildResult, PlatformOutcome } from './types.js';
import { exportOutputs, planOutputs, type OutputPlan } from './outputs.js';
import { gitInfo } from './git.js';

/** Reads the Dockerfile and its ignore file (`Dockerfile.dockerignore` beside it wins over the context's). */
async function readInputs(opts: BuildOptions): Promise<{ file: string; text: string; ignore: (rel: string, isDir: boolean) => boolean; filtered: boolean }> {
  const context = path.resolve(opts.context);
  let st;
  try {
    st = await fs.stat(context);
  } catch {
    throw new ArchwayError('NOT_FOUND', `build context "${opts.context}" does not exist`);
  }
  if (!st.isDirectory()) throw new ArchwayError('USAGE', `build context "${opts.context}" is not a directory`);
  const file = opts.dockerfile ? path.resolve(opts.dockerfile) : path.join(context, 'Dockerfile');
  let text: string;
  if (opts.dockerfileText !== undefined) text = opts.dockerfileText;
  else {
    try {
      text = await fs.readFile(file, 'utf8');
    } catch {
      throw new ArchwayError('NOT_FOUND', `Dockerfile "${opts.dockerfile ?? path.join(opts.context, 'Dockerfile')}" not found`, { hint: 'give its path with -f, or - to read it from stdin' });
    }
  }
  let ignoreText = '';
  // A Dockerfile from stdin has no ignore file of its own beside it.
  for (const candidate of [...(opts.dockerfileText === undefined ? [`${file}.dockerignore`] : []), path.join(context, '.dockerignore')]) {
    try {
      ignoreText = await fs.readFile(candidate, 'utf8');
      break;
    } catch {
      /* try the next */
    }
  }
  const matcher = dockerignoreMatcher(ignoreText);
  const filtered = ignoreText.split('\n').some((l) => l.trim() !== '' && !l.trim().startsWith('#'));
  return { file, text, ignore: (rel, isDir) => matcher(rel, isDir), filtered };
}

export interface PlannedBuild {
  plan: BuildPlan;
  platforms: Platform[];
  file: string;
  /** The outputs and tags, checked. */
  outputs: OutputPlan;
}

/** Parses and plans without running anything (for --dry-run and for the build itself). */
export async function planDockerfile(opts: BuildOptions): Promise<PlannedBuild & { text: string; ignore: (rel: string, isDir: boolean) => boolean; filtered: boolean }> {
  const platforms = opts.platforms && opts.platforms.length > 0 ? opts.platforms : [hostPlatform()];
  // Before anything is read or pulled: a bad output or tag must cost no build.
  const outputs = await planOutputs(opts, platforms);
  const { file, text, ignore, filtered } = await readInputs(opts);
  const plan = planBuild(planInputs(opts, text, file));
  return { plan, platforms, file, outputs, text, ignore, filtered };
}

function planInputs(opts: BuildOptions, text: string, file: string): Parameters<typeof planBuild>[0] {
  return {
    dockerfile: text,
    filename: path.relative(process.cwd(), file) || file,
    platforms: opts.platforms && opts.platforms.length > 0 ? opts.platforms : [hostPlatform()],
    buildPlatform: hostPlatform(),
    buildArgs: opts.buildArgs ?? {},
    ...(opts.target ? { target: opts.target } : {}),
  };
}

export { formatPlan };

/** What a stage's base resolves to, checked before any work starts. */
type BaseOpener = (ref: string, platform: Platform) => Promise<{ source: ContentSource; image: LoadedImage }>;

function makeBaseOpener(store: Store, opts: BuildOptions, openContext: OpenContext): BaseOpener {
  const memo = new Map<string, Promise<{ source: ContentSource; image: LoadedImage }>>();
  const pulls = new Map<string, Promise<{ source: ContentSource; root: Descriptor }>>();
  const signalOpt = opts.signal ? { signal: opts.signal } : {};
  return (ref, platform) => {
    const key = `${ref}\0${formatPlatform(platform)}`;
    let hit = memo.get(key);
    if (!hit) {
      hit = (async () => {
        const name = formatReference(withDefaultTag(parseReference(ref)));
        let root: Descriptor | undefined;
        try {
          root = await store.resolve(name, signalOpt);
        } catch (e) {
          if (!isArchwayError(e, 'NOT_FOUND')) throw e;
        }
        let localMiss: ArchwayError | undefined;
        if (root) {
          try {
            return { source: store as ContentSource, image: await resolveImageForPlatform(store, root, platform, { ...signalOpt, strict: true, what: ref }) };
          } catch (e) {
            if (!isArchwayError(e, 'PLATFORM')) throw e;
            // The local copy lacks this platform: the registry may have it.
            localMiss = e;
          }
        }
        // Not here: pull what the build needs into the store (the image index for these platforms).
        // One pull per name, of the platforms the build may want that the source has: a platform
        // the base lacks fails only the callers that need it (an optional one is then left out).
        let pull = pulls.get(name);
        if (!pull) {
          pull = (async () => {
            const src = await openSource(parseLocation(name, 'registry'), openContext);
            const rootDesc = await src.content.resolve(src.reference, signalOpt);
            const wanted = [...(opts.platforms ?? []), platform];
            const parsed = await readManifestOrIndex(src.content, rootDesc, signalOpt);
            let available = wanted;
            if (isIndex(parsed)) {
              const candidates = platformManifests(parsed.value);
              available = wanted.filter((p) => candidates.some((d) => d.platform && platformEquals(d.platform, p)) || bestMatch(candidates, p) !== undefined);
            } else {
              const img = await loadImage(src.content, { ...rootDesc, mediaType: parsed.mediaType }, signalOpt);
              available = wanted.filter((p) => platformEquals(img.platform, p) || bestMatch([{ platform: img.platform }], p) !== undefined);
            }
            if (available.length > 0) {
              await copyImage(src.content, src.reference, store, [name], { ...signalOpt, platforms: available, progress: opts.progress ?? nullProgress });
            }
            return { source: src.content, root: rootDesc };
          })();
          pulls.set(name, pull);
        }
        let pulledFrom: { source: ContentSource; root: Descriptor };
        try {
          pulledFrom = await pull;
          // This caller's platform, asked of the source: its error lists what the registry has.
          await resolveImageForPlatform(pulledFrom.source, pulledFrom.root, platform, { ...signalOpt, strict: true, what: ref });
        } catch (e) {
          if (localMiss && !opts.signal?.aborted && !isArchwayError(e, 'PLATFORM')) {
            throw new ArchwayError('PLATFORM', `${localMiss.message} (in the local store; pulling it from its registry failed too: ${errorMessage(e).split('\n')[0]})`, { details: localMiss.details });
          }
          // The registry's error names a host, not the image: say which image, keeping the code (exit status).
          if (isArchwayError(e) && e.code !== 'PLATFORM' && e.code !== 'INTERRUPTED' && !opts.signal?.aborted) {
            throw new ArchwayError(e.code, `cannot pull ${name}: ${e.message}`, { cause: e, details: { ...e.details, reference: name }, ...(e.hint ? { hint: e.hint } : {}) });
          }
          throw e;
        }
        const pulled = await store.resolve(name, signalOpt);
        return { source: store as ContentSource, image: await resolveImageForPlatform(store, pulled, platform, { ...signalOpt, strict: true, what: ref }) };
      })();
      memo.set(key, hit);
      hit.catch(() => memo.delete(key));
    }
    return hit;
  };
}

function targetPlatformsOf(stage: StageNode): Platform {
  return stage.targetPlatforms.length === 1 ? (stage.targetPlatforms[0] as Platform) : stage.platform;
}

/** A problem found before the build, and the target platforms whose build it stops. */
interface PreflightProblem {
  kind: 'base' | 'emulation';
  /** For the error: what is wrong. */
  message: string;
  /** For an optional platform's warning: why it is left out. */
  reason: string;
  targets: Platform[];
  /** For an emulation problem: the architecture to register (`archway binfmt --install ARCH`). */
  arch?: string;
}

function addTargets(into: Platform[], more: readonly Platform[]): void {
  for (const p of more) if (!into.some((q) => platformEquals(p, q))) into.push(p);
}

/**
 * Checks before any work what would otherwise fail deep inside a build: every base image has every
 * platform it is needed for, and every platform with RUN steps can run here. A problem that stops
 * only optional target platforms leaves them out (returned: platform → why); one that stops a
 * required platform (or every platform) fails the build.
 */
async function preflight(plan: BuildPlan, openBase: BaseOpener, dockerfileName: string, optional: readonly Platform[], signal?: AbortSignal): Promise<Map<string, { platform: Platform; reason: string }>> {
  // Every base is opened at once (a warm build spends most of its time here otherwise), and the
  // emulators are read meanwhile; problems are reported in the Dockerfile's order.
  const runnable = checkRunnable(plan);
  runnable.catch(() => undefined);
  const seen = new Map<string, Platform[]>();
  const opens: Array<Promise<PreflightProblem | undefined>> = [];
  for (const stage of plan.stages) {
    const refs: Array<{ ref: string; platform: Platform; line: number; instruction: string }> = [];
    if (stage.base.kind === 'image') refs.push({ ref: stage.base.ref, platform: stage.base.platform, line: stage.line, instruction: `FROM ${stage.base.ref}` });
    for (const step of stage.steps) {
      if ((step.kind === 'copy' || step.kind === 'add') && step.from.kind === 'image') {
        refs.push({ ref: step.from.ref, platform: step.from.platform, line: step.line, instruction: `${step.kind.toUpperCase()} --from=${step.from.ref}` });
      }
    }
    for (const r of refs) {
      const k = `${r.ref} ${formatPlatform(r.platform)}`;
      // The same image for the same platform is opened once; what it stops is every stage using it.
      const known = seen.get(k);
      if (known) {
        addTargets(known, stage.targetPlatforms);
        continue;
      }
      const targets: Platform[] = [];
      addTargets(targets, stage.targetPlatforms);
      seen.set(k, targets);
      opens.push(
        openBase(r.ref, r.platform).then(
          () => undefined,
          (e: unknown) => {
            if (!signal?.aborted && isArchwayError(e, 'PLATFORM')) {
              const message = `base image ${e.message} (Dockerfile line ${r.line})`;
              return { kind: 'base' as const, message, reason: `the ${message}`, targets };
            }
            if (!signal?.aborted && isArchwayError(e) && e.code !== 'INTERRUPTED') {
              throw new ArchwayError(e.code, `${dockerfileName}:${r.line}: ${r.instruction}: ${e.message}`, { cause: e, details: { ...e.details, file: dockerfileName, line: r.line }, ...(e.hint ? { hint: e.hint } : {}) });
            }
            throw e;
          },
        ),
      );
    }
  }
  const baseProblems = (await Promise.all(opens)).filter((p): p is PreflightProblem => p !== undefined);
  // A failure to read binfmt_misc is reported after the bases' problems, as before.
  const emulation = await runnable.then(
    (problems) => ({ problems, error: undefined as unknown }),
    (error: unknown) => ({ problems: [] as PreflightProblem[], error }),
  );
  const emulationProblems = emulation.problems;
  const isOptional = (p: Platform): boolean => optional.some((o) => platformEquals(o, p));
  const stopsRequired = (p: PreflightProblem): boolean => p.targets.length === 0 || p.targets.some((t) => !isOptional(t));
  const dropped = new Map<string, { platform: Platform; reason: string }>();
  for (const p of [...baseProblems, ...emulationProblems]) {
    if (stopsRequired(p)) continue;
    for (const t of p.targets) if (!dropped.has(formatPlatform(t))) dropped.set(formatPlatform(t), { platform: t, reason: p.reason });
  }
  // Leaving every platform out builds nothing: then each problem is the build's.
  const all = dropped.size > 0 && plan.targets.every((t) => dropped.has(formatPlatform(t.platform)));
  const fatal = (p: PreflightProblem): boolean => all || stopsRequired(p);
  const badBases = baseProblems.filter(fatal);
  if (badBases.length > 0) {
    throw new ArchwayError('PLATFORM', badBases.map((p) => p.message).join('\n'), {
      hint: 'build only the platforms the base has (--platform), or use a base that has them all (a mirror that copied only one architecture is a common cause: archway copy --multi-arch all)',
    });
  }
  if (emulation.error !== undefined) throw emulation.error;
  const cannotRun = emulationProblems.filter(fatal);
  if (cannotRun.length > 0) {
    const archs = [...new Set(cannotRun.map((p) => p.arch).filter((a): a is string => a !== undefined))].join(',');
    throw new ArchwayError('EMULATION', `cannot run RUN steps for ${cannotRun.map((p) => p.message).join(', ')}`, {
      hint: `register QEMU emulators with: archway binfmt --install ${archs}  (needs the Debian package qemu-user-static)`,
    });
  }
  return all ? new Map() : dropped;
}

/**
 * Every platform with RUN steps can run here, natively or through a registered emulator; the
 * problems found, one per platform, with the target platforms each stops.
 */
async function checkRunnable(plan: BuildPlan): Promise<PreflightProblem[]> {
  const cannot = new Map<string, PreflightProblem>();
  let binfmt: BinfmtState | undefined;
  for (const stage of plan.stages) {
    if (!stage.steps.some((s) => s.kind === 'run')) continue;
    const key = formatPlatform(stage.platform);
    const known = cannot.get(key);
    if (known) {
      addTargets(known.targets, stage.targetPlatforms);
      continue;
    }
    const res = await canRun(stage.platform, { state: (binfmt ??= await readBinfmt()) });
    if (res.ok) continue;
    const why = res.reason ?? 'no emulator';
    const targets: Platform[] = [];
    addTargets(targets, stage.targetPlatforms);
    cannot.set(key, { kind: 'emulation', message: `${key} (${why})`, reason: `its RUN steps cannot run here: ${why}`, targets, arch: key.split('/')[1] as string });
  }
  return [...cannot.values()];
}

/**
 * COPY and ADD give the files they write to root (or to --chown's owner), which a user other than
 * root cannot do outside a user namespace: refused before any work, naming the first such step,
 * rather than failing half-way with EPERM (see docs/rootless.md).
 */
function refuseRootlessCopy(plan: BuildPlan, dockerfileName: string): void {
  const uid = process.getuid?.();
  if (uid === undefined || uid === 0) return;
  for (const stage of plan.stages) {
    const step = stage.steps.find((s) => s.kind === 'copy' || s.kind === 'add');
    if (!step) continue;
    throw new ArchwayError('SANDBOX', `${dockerfileName}:${step.line}: ${step.display}: COPY and ADD need root: as uid ${uid}, archway cannot give the files to root (building without root is not supported yet)`, {
      hint: 'run the build as root (sudo -E archway build ...); see docs/rootless.md',
    });
  }
}

/** OCI labels every build records: the source and revision when known (the time is per image, see finishImage). */
function provenanceLabels(context: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const git = gitInfo(context);
  if (git.revision) labels[Annotation.Revision] = git.revision;
  if (git.source) labels[Annotation.Source] = git.source;
  return labels;
}

/**
 * Builds a Dockerfile for every requested platform and publishes the result. Platforms build
 * concurrently (bounded by `jobs`); one failing does not stop the others, but nothing is published
 * unless every required platform succeeded.
 */
export async function buildDockerfile(opts: BuildOptions): Promise<BuildResult> {
  const progress = opts.progress ?? nullProgress;
  const signalOpt = opts.signal ? { signal: opts.signal } : {};
  const first = await planDockerfile(opts);
  refuseRootlessCopy(first.plan, path.relative(process.cwd(), first.file) || first.file);
  // A missing secret file is the user's input: say so before any base is pulled or step runs.
  const secrets = await loadSecrets(opts.secrets ?? [], opts.env ?? process.env);
  const { ignore } = first;
  let plan = first.plan;
  const warnings = plan.warnings.map((w) => `${w.file}:${w.line}: ${w.message}`);
  for (const k of plan.unusedBuildArgs ?? []) warnings.push(`--build-arg ${k} is not used: no ARG ${k} in ${path.relative(process.cwd(), first.file) || first.file}`);
  for (const w of warnings) progress.emit({ kind: 'message', level: 'warn', text: w });
  const store = await Store.open({ ...(opts.env ? { env: opts.env } : {}), ...signalOpt });
  const scratch = path.join(store.tmpDir, 'mounts');
  await cleanStaleMounts(scratch);
  const openContext: OpenContext = { store, ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}), ...(opts.env ? { env: opts.env } : {}), ...signalOpt, progress };
  const openBase = makeBaseOpener(store, opts, openContext);
  const dockerfileName = path.relative(process.cwd(), first.file) || first.file;
  // Optional platforms the checks leave out (their base lacks them, or they cannot run here):
  // the rest is planned again without them, and the result says so.
  const skipped = new Map<string, string>();
  let building: Platform[] = first.platforms;
  const leaveOut = (drop: Map<string, { platform: Platform; reason: string }>): boolean => {
    if (drop.size === 0) return false;
    for (const [p, { reason }] of drop) {
      skipped.set(p, reason);
      const text = `${p} is optional and is left out: ${reason}`;
      warnings.push(text);
      progress.emit({ kind: 'message', level: 'warn', text });
    }
    const gone = [...drop.values()].map((d) => d.platform);
    building = building.filter((p) => !gone.some((g) => platformEquals(g, p)));
    return true;
  };
  const optional = opts.optionalPlatforms ?? [];
  if (leaveOut(await preflight(plan, openBase, dockerfileName, optional, opts.signal))) {
    plan = planBuild(planInputs({ ...opts, platforms: building }, first.text, first.file));
  }
  // Now that the bases are known, plan again with their environments (ENV PATH=$PATH:/x needs the base's PATH).
  // ONBUILD triggers of the bases, too: the planner puts them at the start of the stages built on them.
  // And their SHELL, which shell-form RUN, CMD and ENTRYPOINT of a child image use, as in BuildKit.
  const baseEnvs = new Map<string, Record<string, string>>();
  const baseTriggers = new Map<string, string[]>();
  const baseShells = new Map<string, string[]>();
  for (const stage of plan.stages) {
    if (stage.base.kind !== 'image') continue;
    const { image } = await openBase(stage.base.ref, stage.base.platform);
    const env: Record<string, string> = {};
    for (const e of image.config.config?.Env ?? []) {
      const i = e.indexOf('=');
      if (i > 0) env[e.slice(0, i)] = e.slice(i + 1);
    }
    const k = `${stage.base.ref}\0${formatPlatform(stage.base.platform)}`;
    baseEnvs.set(k, env);
    const triggers = image.config.config?.OnBuild ?? [];
    if (triggers.length > 0) baseTriggers.set(k, triggers);
    const shell = image.config.config?.Shell ?? [];
    if (shell.length > 0) baseShells.set(k, shell);
  }
  // Planning again only matters when a base's variable is used in the Dockerfile (or a base has
  // triggers or a SHELL); the names it mentions are a safe over-approximation of what expansion reads.
  const mentioned = new Set([...first.text.matchAll(/\$\{?([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]));
  const envMatters = [...baseEnvs.values()].some((env) => Object.keys(env).some((k) => mentioned.has(k)));
  if (envMatters || baseTriggers.size > 0 || baseShells.size > 0) {
    const planWithBases = (): BuildPlan =>
      planBuild({
        ...planInputs({ ...opts, platforms: building }, first.text, first.file),
        baseImageEnv: (ref, p) => baseEnvs.get(`${ref}\0${formatPlatform(p)}`),
        baseImageOnBuild: (ref, p) => baseTriggers.get(`${ref}\0${formatPlatform(p)}`),
        baseImageShell: (ref, p) => baseShells.get(`${ref}\0${formatPlatform(p)}`),
      });
    plan = planWithBases();
    // Triggers can add RUN steps and sources: check the final plan too (bases are opened once).
    if (baseTriggers.size > 0 && leaveOut(await preflight(plan, openBase, dockerfileName, optional, opts.signal))) plan = planWithBases();
  }

  // A --build-arg SOURCE_DATE_EPOCH wins over the environment's, as in buildx.
  const envEpoch = opts.buildArgs?.['SOURCE_DATE_EPOCH'] ?? (opts.env ?? process.env).SOURCE_DATE_EPOCH;
  const sourceDateEpoch = envEpoch && /^\d+$/.test(envEpoch) ? Number(envEpoch) : undefined;
  const contextTree: SourceTree = { label: 'build context', root: path.resolve(opts.context), ignored: ignore, filtered: first.filtered };
  const solver = new Solver({
    store,
    contextTree,
    openBase,
    noCache: opts.noCache ?? false,
    network: opts.network ?? 'default',
    buildPlatform: hostPlatform(),
    targetPlatformOf: targetPlatformsOf,
    dockerfileName,
    secrets,
    ...(sourceDateEpoch !== undefined ? { sourceDateEpoch } : {}),
    ...signalOpt,
    progress,
  });

  const labels = { ...provenanceLabels(opts.context), ...(opts.labels ?? {}) };
  // RUN steps are bounded by the cores on their own (the solver's run limiter); the rest of a
  // platform's work is mostly waiting on files, so by default every platform goes at once (up to 8).
  const jobs = new Limiter(Math.max(1, opts.jobs ?? Math.min(8, Math.max(availableParallelism(), plan.targets.length))));
  let settled: Array<PromiseSettledResult<Descriptor>>;
  try {
    settled = await Promise.allSettled(
      plan.targets.map((t) =>
        jobs.run(async () => {
          const state = await solver.solveStage(t.stage);
          return finishImage(store, state, t.platform, labels, sourceDateEpoch, first.outputs.format, opts.signal);
        }, opts.signal),
      ),
    );
  } finally {
    await solver.dispose();
  }
  if (opts.signal?.aborted) throw new ArchwayError('INTERRUPTED', 'build interrupted; nothing was published');

  const outcomes: PlatformOutcome[] = plan.targets.map((t, i) => {
    const r = settled[i] as PromiseSettledResult<Descriptor>;
    const s = solver.stats.get(formatPlatform(t.platform));
    const base = { platform: formatPlatform(t.platform), emulatedMs: s?.emulatedMs ?? 0, stepsRun: s?.run ?? 0, stepsCached: s?.cached ?? 0 };
    return r.status === 'fulfilled' ? { ...base, ok: true, descriptor: r.value } : { ...base, ok: false, error: errorMessage(r.reason) };
  });
  const advice = crossCompileAdvice(solver);
  const failedRequired = outcomes.filter((o, i) => !o.ok && !(opts.optionalPlatforms ?? []).some((p) => platformEquals(p, plan.targets[i]?.platform as Platform)));
  if (failedRequired.length > 0) {
    const first = settled.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    const firstErr: unknown = first?.reason;
    const code = isArchwayError(firstErr) ? firstErr.code : 'STEP_FAILED';
    const summary = [
      ...outcomes.map((o) => `  ${o.platform}: ${o.ok ? 'ok' : `FAILED: ${o.error?.split('\n')[0]}`}`),
      ...[...skipped].map(([p, why]) => `  ${p}: left out (optional): ${why.split('\n')[0]}`),
    ].join('\n');
    throw new ArchwayError(code, `build failed for ${failedRequired.map((o) => o.platform).join(', ')}; nothing was published\n${failedRequired.map((o) => o.error).join('\n')}\nsummary:\n${summary}`, {
      details: { outcomes },
      ...(isArchwayError(firstErr) && firstErr.hint ? { hint: firstErr.hint } : {}),
    });
  }
  for (const o of outcomes) if (!o.ok) progress.emit({ kind: 'message', level: 'warn', text: `optional platform ${o.platform} failed and is left out: ${o.error?.split('\n')[0]}` });

  const images = outcomes.filter((o) => o.ok && o.descriptor).map((o) => o.descriptor as Descriptor);
  if (images.length === 0) {
    throw new ArchwayError('STEP_FAILED', `every platform failed (all were optional); nothing was published\n${outcomes.map((o) => `  ${o.platform}: ${o.error?.split('\n')[0] ?? ''}`).join('\n')}`, { details: { outcomes } });
  }
  // The optional platforms left out before the build are in the result too, saying why.
  for (const [platform, reason] of skipped) outcomes.push({ platform, ok: false, skipped: true, error: reason, emulatedMs: 0, stepsRun: 0, stepsCached: 0 });
  let root: Descriptor;
  if (images.length === 1 && !opts.forceIndex) root = images[0] as Descriptor;
  else {
    const idx = buildIndex(images, { format: first.outputs.format });
    await store.push(idx.descriptor, idx.raw, signalOpt);
    root = idx.descriptor;
  }
  await exportOutputs(store, root, images, first.outputs, opts, openContext);
  return { outcomes, root, tags: first.outputs.storeTags, warnings, advice };
}

async function finishImage(store: Store, state: StageState, platform: Platform, labels: Record<string, string>, sourceDateEpoch: number | undefined, format: ManifestFormat, signal?: AbortSignal): Promise<Descriptor> {
  const config: ImageConfig = structuredClone(state.config);
  config.config ??= {};
  // Created when its newest step ran: an unchanged rebuild republishes the same digest.
  const created = sourceDateEpoch !== undefined ? new Date(sourceDateEpoch * 1000).toISOString() : (latestCreated(config) ?? new Date().toISOString());
  config.config.Labels = { ...(config.config.Labels ?? {}), [Annotation.Created]: created, ...labels };
  config.created = created;
  // The image is for the target platform even when its last stage ran elsewhere (cross-compiled copies).
  config.os = platform.os;
  config.architecture = platform.architecture;
  if (platform.variant) config.variant = platform.variant;
  else delete config.variant;
  const built = buildImage(config, state.layers, { format });
  const s = signal ? { signal } : {};
  await store.push(built.configDescriptor, built.config, s);
  await store.push(built.manifestDescriptor, built.manifest, s);
  return built.manifestDescriptor;
}

function crossCompileAdvice(solver: Solver): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const [platform, s] of solver.stats) {
    for (const slow of s.slowEmulatedSteps) {
      if (slow.ms < 10_000 || seen.has(slow.stage.id)) continue;
      seen.add(slow.stage.id);
      out.push(
        `[${platform}] "${slow.step.display}" (line ${slow.step.line}) ran ${(slow.ms / 1000).toFixed(0)}s under emulation. If it compiles code, cross-compile it natively:\n` +
          `  FROM --platform=$BUILDPLATFORM ${slow.stage.base.kind === 'image' ? slow.stage.base.ref : 'builder-image'} AS build\n  ARG TARGETOS TARGETARCH\n  RUN <build for $TARGETOS/$TARGETARCH>\n  FROM ...\n  COPY --from=build /out /`,
      );
    }
  }
  return out;
}
