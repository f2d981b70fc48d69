// The QVD web administration console: plain modules, no build step, no dependencies.
import {start} from './app.js';

start();
