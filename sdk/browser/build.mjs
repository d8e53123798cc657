// Builds the browser snippet with esbuild:
//   dist/appguard.js      the script-tag build (IIFE, `window.AppGuard`, minified, source map)
//   dist/appguard.esm.js  the same API as an ES module, for bundlers and <script type="module">
//   dist/THIRD_PARTY_NOTICES.txt  the licences of the npm packages bundled into both
// Run by the repository root's `npm ci` (postinstall) and by `npm run build` here.

import { readFile, readdir, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const require = createRequire(import.meta.url);

let esbuild;
try {
  esbuild = require("esbuild");
} catch {
  console.error("sdk/browser/build.mjs: esbuild is not installed; run `npm ci` at the repository root");
  process.exit(1);
}

const common = {
  bundle: true,
  minify: true,
  sourcemap: "linked",
  target: ["es2020", "chrome80", "firefox78", "safari15"],
  platform: "browser",
  legalComments: "none",
  metafile: true,
  logLevel: "warning",
  absWorkingDir: here,
};

// The npm package (name, version, folder) a bundled file comes from.
function packageOf(file) {
  const parts = file.split(/[\\/]/);
  const at = parts.lastIndexOf("node_modules");
  if (at < 0) return null;
  const nameParts = parts[at + 1].startsWith("@") ? parts.slice(at + 1, at + 3) : [parts[at + 1]];
  return { name: nameParts.join("/"), folder: parts.slice(0, at + 1 + nameParts.length).join(sep) };
}

async function notices(metafiles) {
  const folders = new Map();
  for (const meta of metafiles) {
    for (const input of Object.keys(meta.inputs)) {
      const pkg = packageOf(join(here, input));
      if (pkg) folders.set(pkg.name, pkg.folder);
    }
  }
  const sections = [];
  for (const [name, folder] of [...folders].sort()) {
    const manifest = JSON.parse(await readFile(join(folder, "package.json"), "utf8"));
    const licenceFile = (await readdir(folder)).find((f) => /^(licen[cs]e|copying)/i.test(f));
    const text = licenceFile ? await readFile(join(folder, licenceFile), "utf8") : `Licence: ${manifest.license}`;
    sections.push(`${name} ${manifest.version} (${manifest.license})\n\n${text.trim()}\n`);
  }
  return sections;
}

async function build() {
  await rm(dist, { recursive: true, force: true });
  const script = await esbuild.build({
    ...common,
    entryPoints: [join(here, "src", "browser.js")],
    outfile: join(dist, "appguard.js"),
    format: "iife",
    globalName: "AppGuard",
  });
  const module = await esbuild.build({
    ...common,
    entryPoints: [join(here, "src", "index.js")],
    outfile: join(dist, "appguard.esm.js"),
    format: "esm",
  });
  const sections = await notices([script.metafile, module.metafile]);
  await writeFile(
    join(dist, "THIRD_PARTY_NOTICES.txt"),
    `The AppGuard browser snippet bundles these npm packages:\n\n${sections.join("\n" + "-".repeat(72) + "\n\n")}`,
  );
  for (const [file, meta] of [["appguard.js", script.metafile], ["appguard.esm.js", module.metafile]]) {
    const bytes = meta.outputs[relative(here, join(dist, file)).split(sep).join("/")].bytes;
    console.log(`sdk/browser: built dist/${file} (${bytes} bytes)`);
  }
}

build().catch((err) => {
  console.error("sdk/browser/build.mjs:", err.message || err);
  process.exit(1);
});
