// Bundles app.mjs once per SDK major with esbuild (ESM, code splitting).
import { build } from "esbuild";

const majors = { sdk5: "@arcgis/core", sdk4: "arcgis-core-4" };
for (const [name, pkg] of Object.entries(majors)) {
  await build({
    entryPoints: ["app.mjs"],
    bundle: true,
    format: "esm",
    splitting: true,
    outdir: `dist/${name}`,
    alias: { sdk: pkg },
    logLevel: "warning",
    minify: true,
  });
}
