import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** @type {import('next').NextConfig} */
const nextConfig = {
  // This folder is the project's root, whatever lock files the folders above it hold.
  turbopack: {
    root: dirname(fileURLToPath(import.meta.url)),
  },
  experimental: {
    // Source maps of the server bundles, which instrumentation.node.ts reads to point the
    // stack traces of server errors at the app's own files (app/api/checkout/route.ts).
    serverSourceMaps: true,
    // Server code keeps its function names (reserve, POST) in stack traces.
    turbopackMinify: { server: false },
  },
};

export default nextConfig;
